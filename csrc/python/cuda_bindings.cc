// forward_cuda / backward_cuda over __cuda_array_interface__ objects. The caller allocates
// every output; we validate shapes, dtypes and contiguity from the interface dicts, order
// our stream after the producers' streams, run, and return without synchronizing.
#include "cuda_bindings.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/cuda_launch_heuristics.h"
#include "../core/gru_cuda.h"
#include "../core/shape_check.h"

namespace py = pybind11;

namespace gategru {
namespace {

struct DeviceArray {
  std::string name;
  Shape shape;
  std::string typestr;  // "<f4", "<f8", "|b1"
  uintptr_t ptr = 0;
  bool readonly = false;
  std::optional<uintptr_t> stream;  // v3: the producer's stream, which we must wait on
};

void require(const std::string& err) {
  if (!err.empty()) throw py::value_error(err);
}

void check_cuda(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) throw std::runtime_error(what + ": " + cuda_error_string(err));
}

DeviceArray device_array(const py::handle& obj, const char* name) {
  if (!py::hasattr(obj, "__cuda_array_interface__")) {
    throw py::type_error(std::string("`") + name +
                         "` must be a CUDA device array exposing __cuda_array_interface__ "
                         "(a PyTorch CUDA tensor or a CuPy array)");
  }
  const py::dict d = obj.attr("__cuda_array_interface__");
  DeviceArray a;
  a.name = name;
  for (const auto& v : d["shape"].cast<py::tuple>()) a.shape.push_back(v.cast<int64_t>());
  a.typestr = d["typestr"].cast<std::string>();
  const auto data = d["data"].cast<py::tuple>();
  a.ptr = data[0].cast<uintptr_t>();
  a.readonly = data[1].cast<bool>();
  if (d.contains("mask") && !d["mask"].is_none()) {
    throw py::value_error(std::string("`") + name + "`: masked arrays are not supported");
  }
  if (d.contains("strides") && !d["strides"].is_none()) {
    const auto strides = d["strides"].cast<py::tuple>();
    int64_t expected = std::stoll(a.typestr.substr(2));  // item size in bytes
    for (int i = static_cast<int>(a.shape.size()) - 1; i >= 0; --i) {
      if (a.shape[i] > 1 && strides[i].cast<int64_t>() != expected) {
        throw py::value_error(
            std::string("`") + name +
            "` must be C-contiguous (call .contiguous() / cupy.ascontiguousarray)");
      }
      expected *= a.shape[i];
    }
  }
  if (d.contains("stream") && !d["stream"].is_none()) a.stream = d["stream"].cast<uintptr_t>();
  return a;
}

std::optional<DeviceArray> optional_array(const py::object& obj, const char* name) {
  if (obj.is_none()) return std::nullopt;
  return device_array(obj, name);
}

// The mask: None, or as for the op, shape (0,), means none.
std::optional<DeviceArray> optional_mask(const py::object& obj) {
  std::optional<DeviceArray> mask = optional_array(obj, "mask");
  if (mask && is_none_vector(mask->shape)) return std::nullopt;
  return mask;
}

template <typename T>
const char* typestr_of() {
  // __cuda_array_interface__ has no bfloat16: such arrays come as int16 views of the bits
  // (PyTorch: t.view(torch.int16)), with dtype="bfloat16".
  if constexpr (std::is_same_v<T, Half>) return "<f2";
  if constexpr (std::is_same_v<T, BFloat16>) return "<i2";
  return sizeof(T) == 4 ? "<f4" : "<f8";
}

void check_array(const DeviceArray& a, const char* typestr, const Shape& shape, bool output) {
  if (a.typestr != typestr) {
    throw py::type_error("`" + a.name + "` has dtype " + a.typestr + ", expected " + typestr);
  }
  require(check_same_shape(a.name.c_str(), a.shape, shape));
  if (output && a.readonly) throw py::value_error("`" + a.name + "` is read-only");
}

template <typename T>
T* data(const DeviceArray& a) {
  return reinterpret_cast<T*>(a.ptr);
}
template <typename T>
T* data(const std::optional<DeviceArray>& a) {
  return a ? data<T>(*a) : nullptr;
}

CudaPath parse_path(const std::string& path) {
  if (path == "auto") return CudaPath::kAuto;
  if (path == "persistent") return CudaPath::kPersistent;
  if (path == "step") return CudaPath::kPerStep;
  throw py::value_error("`path` must be 'auto', 'persistent' or 'step', got '" + path + "'");
}

// __cuda_array_interface__ and our `stream` argument: 0 or 1 = the legacy default stream,
// 2 = the per-thread default stream, anything else a cudaStream_t.
cudaStream_t as_stream(uintptr_t v) {
  if (v == 0 || v == 1) return cudaStreamLegacy;
  if (v == 2) return cudaStreamPerThread;
  return reinterpret_cast<cudaStream_t>(v);
}

// Restores the calling thread's current device (PyTorch's, say) when we leave.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (device != previous_) check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

// The device holding every array (they must share one), checked to be device memory.
int common_device(const std::vector<const DeviceArray*>& arrays) {
  int device = -1;
  for (const DeviceArray* a : arrays) {
    if (a->ptr == 0) continue;  // empty array
    cudaPointerAttributes attr{};
    check_cuda(cudaPointerGetAttributes(&attr, reinterpret_cast<void*>(a->ptr)),
               "cudaPointerGetAttributes(`" + a->name + "`)");
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
      throw py::value_error("`" + a->name + "` is not in device memory");
    }
    if (device >= 0 && attr.device != device) {
      throw py::value_error("every array must be on one device; `" + a->name + "` is on " +
                            std::to_string(attr.device) + ", others on " +
                            std::to_string(device));
    }
    device = attr.device;
  }
  return device;
}

// Device selection, stream ordering, workspace and launch: what forward and backward share.
template <typename LaunchFn>
void run_on_device(const std::vector<const DeviceArray*>& arrays, uintptr_t stream_arg,
                   size_t workspace_bytes, const char* what, LaunchFn launch) {
  const int device = common_device(arrays);
  if (device < 0) return;  // every array empty: nothing to do
  py::gil_scoped_release release;
  DeviceGuard guard(device);
  const cudaStream_t stream = as_stream(stream_arg);
  std::set<cudaStream_t> producers;
  for (const DeviceArray* a : arrays) {
    if (a->stream && as_stream(*a->stream) != stream) producers.insert(as_stream(*a->stream));
  }
  for (cudaStream_t producer : producers) {  // v3 protocol: wait for the producers' work
    cudaEvent_t ready;
    check_cuda(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreate");
    const cudaError_t rec = cudaEventRecord(ready, producer);
    const cudaError_t wait = rec == cudaSuccess ? cudaStreamWaitEvent(stream, ready, 0) : rec;
    cudaEventDestroy(ready);
    check_cuda(wait, "waiting on an input's stream");
  }
  void* workspace = nullptr;
  if (workspace_bytes > 0) {
    check_cuda(cudaMallocAsync(&workspace, workspace_bytes, stream), "cudaMallocAsync");
  }
  const int rc = launch(static_cast<void*>(stream), workspace);
  if (workspace) cudaFreeAsync(workspace, stream);
  if (rc != 0) throw std::runtime_error(std::string(what) + ": " + cuda_error_string(rc));
}

template <typename T>
void forward_cuda(const DeviceArray& xw, const DeviceArray& h0, const DeviceArray& u,
                  const DeviceArray& b, const DeviceArray& h_seq, const DeviceArray& h_last,
                  const std::optional<DeviceArray>& mask,
                  const std::vector<std::optional<DeviceArray>>& gates, bool reset_after,
                  uintptr_t stream, CudaPath path, const std::optional<DeviceArray>& kernel,
                  const std::optional<DeviceArray>& input_bias) {
  SequenceDims d;
  const Shape mshape = mask ? mask->shape : Shape{};
  if (input_bias && !kernel) require("`input_bias` needs `kernel`: without it, add it to xw");
  require(check_forward_shapes(xw.shape, h0.shape, u.shape, b.shape, mask ? &mshape : nullptr,
                               &d, kernel ? &kernel->shape : nullptr,
                               input_bias ? &input_bias->shape : nullptr));
  const char* ts = typestr_of<T>();
  if (kernel) {
    check_array(*kernel, ts, kernel->shape, false);
    check_array(*input_bias, ts, input_bias->shape, false);
  }
  const Shape seq{d.batch, d.time, d.units}, state{d.batch, d.units};
  check_array(h0, ts, state, false);
  check_array(u, ts, {d.units, 3 * d.units}, false);
  check_array(b, ts, {3 * d.units}, false);
  check_array(h_seq, ts, seq, true);
  check_array(h_last, ts, state, true);
  if (mask) check_array(*mask, "|b1", {d.batch, d.time}, false);
  std::vector<const DeviceArray*> all{&xw, &h0, &u, &b, &h_seq, &h_last};
  if (mask) all.push_back(&*mask);
  if (kernel) all.insert(all.end(), {&*kernel, &*input_bias});
  for (const auto& g : gates) {
    if (!g) continue;
    check_array(*g, ts, seq, true);
    all.push_back(&*g);
  }
  GruForwardParams<T> p;
  p.batch = d.batch;
  p.time = d.time;
  p.units = d.units;
  p.reset_after = reset_after;
  p.set_inputs(data<T>(xw), data<T>(kernel), data<T>(input_bias), d.input_width);
  p.h0 = data<T>(h0);
  p.recurrent_kernel = data<T>(u);
  p.recurrent_bias = data<T>(b);
  p.mask = data<const bool>(mask);
  p.h_seq = data<T>(h_seq);
  p.h_last = data<T>(h_last);
  p.update = data<T>(gates[0]);
  p.reset = data<T>(gates[1]);
  p.candidate = data<T>(gates[2]);
  p.hu_candidate = reset_after ? data<T>(gates[3]) : nullptr;
  run_on_device(all, stream, gru_forward_cuda_workspace(p), "forward_cuda",
                [&](void* s, void* ws) {
                  return gru_forward_cuda(p, s, ws, gru_forward_cuda_workspace(p), path);
                });
}

// Calls fn(T{}) for the storage type: the arrays' typestr, or "bfloat16" over int16 views.
template <typename Fn>
void by_storage(const std::string& typestr, const py::object& dtype_obj, const char* name,
                Fn fn) {
  const std::string dtype = dtype_obj.is_none() ? "" : py::str(dtype_obj).cast<std::string>();
  if (dtype == "bfloat16") {
    if (typestr != "<i2")
      throw py::type_error(std::string("dtype='bfloat16' takes int16 views of the bits (PyTorch: "
                                       "t.view(torch.int16)); `") + name + "` has " + typestr);
    return fn(BFloat16{});
  }
  if (!dtype.empty()) throw py::value_error("`dtype` must be None or 'bfloat16', got " + dtype);
  if (typestr == "<f4") return fn(float{});
  if (typestr == "<f8") return fn(double{});
  if (typestr == "<f2") return fn(Half{});
  throw py::type_error(std::string("`") + name +
                       "` must be float16, float32 or float64 (bfloat16: see dtype), got " +
                       typestr);
}

void forward_any(const py::object& xw, const py::object& h0, const py::object& u,
                 const py::object& b, const py::object& h_seq, const py::object& h_last,
                 const py::object& mask, const py::object& update, const py::object& reset,
                 const py::object& candidate, const py::object& hu_candidate, bool reset_after,
                 uintptr_t stream, const std::string& path, const py::object& kernel,
                 const py::object& input_bias, const py::object& dtype) {
  const DeviceArray x = device_array(xw, "xw");
  const std::vector<std::optional<DeviceArray>> gates{
      optional_array(update, "update"), optional_array(reset, "reset"),
      optional_array(candidate, "candidate"), optional_array(hu_candidate, "hu_candidate")};
  auto call = [&](auto tag) {
    forward_cuda<decltype(tag)>(x, device_array(h0, "h0"), device_array(u, "recurrent_kernel"),
                                device_array(b, "recurrent_bias"), device_array(h_seq, "h_seq"),
                                device_array(h_last, "h_last"), optional_mask(mask),
                                gates, reset_after, stream, parse_path(path),
                                optional_array(kernel, "kernel"),
                                optional_array(input_bias, "input_bias"));
  };
  by_storage(x.typestr, dtype, "xw", call);
}

template <typename T>
void backward_cuda(const std::vector<std::optional<DeviceArray>>& in, const DeviceArray& d_xw,
                   const DeviceArray& d_h0, bool reset_after, uintptr_t stream, CudaPath path) {
  // in: h0, recurrent_kernel, mask, h_seq, update, reset, candidate, hu_candidate, d_h_seq,
  //     d_h_last, d_update, d_reset, d_candidate (the TF op's input order)
  if (reset_after && !in[7]) require("`hu_candidate` is required when reset_after=True");
  // The op's rules (shape_check.cc); a None array takes the op's "absent" shape.
  auto shape = [&](size_t i, const Shape& absent) { return in[i] ? in[i]->shape : absent; };
  const Shape none3{0, 0, 0};
  const BackwardOpShapes shapes{
      shape(0, {}),    shape(1, {}),    shape(2, Shape{0}), shape(3, {}),
      shape(4, {}),    shape(5, {}),    shape(6, {}),       shape(7, none3),
      shape(8, {}),    shape(9, shape(0, {})),  // None: zeros, checked through h0
      shape(10, none3), shape(11, none3), shape(12, none3)};
  SequenceDims d;
  bool has_mask = false;
  require(check_backward_op(shapes, reset_after, &d, &has_mask));
  const int64_t B = d.batch, T_ = d.time, H = d.units;
  const char* ts = typestr_of<T>();
  // What the op takes for "none" (mask (0,), an all-zero hu_candidate or gate gradient) is
  // neither read nor checked for its device.
  auto present = [&](size_t i) {
    if (!in[i]) return false;
    if (i == 2) return has_mask;
    return !((i == 7 || i >= 10) && is_absent(in[i]->shape));
  };
  std::vector<const DeviceArray*> all{&d_xw, &d_h0};
  for (size_t i = 0; i < in.size(); ++i) {
    if (!present(i)) continue;
    check_array(*in[i], i == 2 ? "|b1" : ts, in[i]->shape, false);  // the dtype; shapes: above
    all.push_back(&*in[i]);
  }
  check_array(d_xw, ts, {B, T_, 3 * H}, true);
  check_array(d_h0, ts, {B, H}, true);
  GruBackwardParams<T> p;
  p.batch = B;
  p.time = T_;
  p.units = H;
  p.reset_after = reset_after;
  p.h0 = data<T>(in[0]);
  p.recurrent_kernel = data<T>(in[1]);
  p.mask = present(2) ? data<const bool>(in[2]) : nullptr;
  p.h_seq = data<T>(in[3]);
  p.update = data<T>(in[4]);
  p.reset = data<T>(in[5]);
  p.candidate = data<T>(in[6]);
  p.hu_candidate = reset_after ? data<T>(in[7]) : nullptr;  // present: checked above
  p.d_h_seq = data<T>(in[8]);
  p.d_h_last = data<T>(in[9]);
  p.d_update = present(10) ? data<T>(in[10]) : nullptr;
  p.d_reset = present(11) ? data<T>(in[11]) : nullptr;
  p.d_candidate = present(12) ? data<T>(in[12]) : nullptr;
  p.d_xw = data<T>(d_xw);
  p.d_h0 = data<T>(d_h0);
  run_on_device(all, stream, gru_backward_cuda_workspace(p), "backward_cuda",
                [&](void* s, void* ws) {
                  return gru_backward_cuda(p, s, ws, gru_backward_cuda_workspace(p), path);
                });
}

void backward_any(const py::object& h0, const py::object& u, const py::object& h_seq,
                  const py::object& z, const py::object& r, const py::object& hc,
                  const py::object& d_h_seq, const py::object& d_xw, const py::object& d_h0,
                  const py::object& mask, const py::object& hu, const py::object& d_h_last,
                  const py::object& d_z, const py::object& d_r, const py::object& d_hc,
                  bool reset_after, uintptr_t stream, const std::string& path,
                  const py::object& dtype) {
  const std::vector<std::optional<DeviceArray>> in{
      device_array(h0, "h0"),          device_array(u, "recurrent_kernel"),
      optional_array(mask, "mask"),    device_array(h_seq, "h_seq"),
      device_array(z, "update"),       device_array(r, "reset"),
      device_array(hc, "candidate"),   optional_array(hu, "hu_candidate"),
      device_array(d_h_seq, "d_h_seq"), optional_array(d_h_last, "d_h_last"),
      optional_array(d_z, "d_update"), optional_array(d_r, "d_reset"),
      optional_array(d_hc, "d_candidate")};
  const DeviceArray dx = device_array(d_xw, "d_xw"), dh0 = device_array(d_h0, "d_h0");
  by_storage(in[3]->typestr, dtype, "h_seq", [&](auto tag) {
    backward_cuda<decltype(tag)>(in, dx, dh0, reset_after, stream, parse_path(path));
  });
}

py::tuple cuda_available() {
  const CudaSupport s = cuda_support();
  return py::make_tuple(s.available, s.message);
}

py::dict cuda_launch_plan(int64_t batch, int64_t units, const std::string& dtype, bool backward,
                          bool reset_after, const std::string& path) {
  CudaLaunchPlan plan;
  int rc;
  if (dtype == "float32") {
    rc = gru_cuda_plan<float>(backward, batch, units, reset_after, parse_path(path), &plan);
  } else if (dtype == "float64") {
    rc = gru_cuda_plan<double>(backward, batch, units, reset_after, parse_path(path), &plan);
  } else if (dtype == "float16") {
    rc = gru_cuda_plan<Half>(backward, batch, units, reset_after, parse_path(path), &plan);
  } else if (dtype == "bfloat16") {
    rc = gru_cuda_plan<BFloat16>(backward, batch, units, reset_after, parse_path(path), &plan);
  } else {
    throw py::value_error("`dtype` must be 'float16', 'bfloat16', 'float32' or 'float64'");
  }
  if (rc != 0 && plan.reason.empty()) throw std::runtime_error(cuda_error_string(rc));
  py::dict d;
  d["ok"] = rc == 0;
  d["persistent"] = plan.persistent;
  d["blocks_x"] = plan.blocks_x;
  d["blocks_y"] = plan.blocks_y;
  d["slice_width"] = plan.slice_width;
  d["warps_per_row"] = plan.warps_per_row;
  d["rows_per_block"] = plan.rows_per_block;
  d["smem_bytes"] = plan.smem_bytes;
  d["reason"] = plan.reason;
  return d;
}

}  // namespace

void register_cuda_bindings(py::module_& m) {
  m.def("cuda_available", &cuda_available,
        "(available, message): whether the CUDA kernels can run in this process; the "
        "message names device 0, or says plainly why not (no device, driver too old).");
  m.def("forward_cuda", &forward_any, py::arg("xw"), py::arg("h0"), py::arg("recurrent_kernel"),
        py::arg("recurrent_bias"), py::arg("h_seq"), py::arg("h_last"),
        py::arg("mask") = py::none(), py::arg("update") = py::none(),
        py::arg("reset") = py::none(), py::arg("candidate") = py::none(),
        py::arg("hu_candidate") = py::none(), py::arg("reset_after") = true,
        py::arg("stream") = 0, py::arg("path") = "auto", py::arg("kernel") = py::none(),
        py::arg("input_bias") = py::none(), py::arg("dtype") = py::none(),
        "GRU over a whole sequence on the GPU, into caller-allocated outputs.\n\n"
        "Every array is a C-contiguous CUDA array (PyTorch tensor, CuPy array) of one "
        "dtype, float16, float32 or float64 (mask: bool); 16-bit floats are computed in "
        "float32. bfloat16: pass int16 views of the bits (PyTorch: t.view(torch.int16)) and "
        "dtype='bfloat16' (__cuda_array_interface__ has no bfloat16). xw (B,T,3H) (or, with "
        "kernel (I,3H) and "
        "input_bias (3H,), the inputs x (B,T,I), projected first), h0 (B,H), recurrent_kernel "
        "(H,3H), recurrent_bias (3H,), mask (B,T) or None. Outputs: h_seq (B,T,H), h_last "
        "(B,H), and optionally update, reset, candidate, hu_candidate (B,T,H) (None: not "
        "written; backward with reset_after needs all four). `stream`: a cudaStream_t as an "
        "int (0: the legacy default stream; PyTorch: torch.cuda.current_stream().cuda_stream)."
        " `path`: 'auto', 'persistent' or 'step'. Returns without synchronizing.");
  m.def("backward_cuda", &backward_any, py::arg("h0"), py::arg("recurrent_kernel"),
        py::arg("h_seq"), py::arg("update"), py::arg("reset"), py::arg("candidate"),
        py::arg("d_h_seq"), py::arg("d_xw"), py::arg("d_h0"), py::arg("mask") = py::none(),
        py::arg("hu_candidate") = py::none(), py::arg("d_h_last") = py::none(),
        py::arg("d_update") = py::none(), py::arg("d_reset") = py::none(),
        py::arg("d_candidate") = py::none(), py::arg("reset_after") = true,
        py::arg("stream") = 0, py::arg("path") = "auto", py::arg("dtype") = py::none(),
        "Backward of forward_cuda() into caller-allocated d_xw (B,T,3H) and d_h0 (B,H): the "
        "gradients of the pre-activations and of h0. Weight gradients are sums over time "
        "that the caller forms with matmuls. Same conventions as forward_cuda.");
  m.def(
      "cuda_set_launch_override",
      [](int slice_width, int64_t blocks_y) {
        if (slice_width < 0 || blocks_y < 0)
          throw py::value_error("`slice_width` and `blocks_y` must be >= 0 (0: the heuristic)");
        cuda_launch::persistent_override().slice_width = slice_width;
        cuda_launch::persistent_override().blocks_y = blocks_y;
      },
      py::arg("slice_width") = 0, py::arg("blocks_y") = 0,
      "For tuning sweeps: forces the persistent kernel's units per block (at most 8) and "
      "batch chunks (at most what fits at once), process-wide, for every later call and "
      "plan; 0 restores the heuristic.");
  m.def("cuda_launch_plan", &cuda_launch_plan, py::arg("batch"), py::arg("units"),
        py::arg("dtype") = "float32", py::arg("backward") = false, py::arg("reset_after") = true,
        py::arg("path") = "auto",
        "The launch forward_cuda/backward_cuda would make on the current device, as a dict.");
}

}  // namespace gategru
