// pybind11 bindings of the framework-free kernels, over numpy arrays (CPU).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>

#include "../core/cpu_isa.h"
#include "../core/gru_cpu.h"
#include "../core/shape_check.h"
#include "thread_workers.h"
#ifdef GATEGRU_WITH_CUDA
#include "cuda_bindings.h"
#endif

namespace py = pybind11;
using gategru::Shape;

namespace {

template <typename T>
using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;
using MaskArray = py::array_t<bool, py::array::c_style | py::array::forcecast>;

Shape shape_of(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim()); }

void require(const std::string& err) {
  if (!err.empty()) throw py::value_error(err);
}

// A new C-order array on a 64-byte boundary, as TensorFlow allocates. numpy's own start 16
// bytes into a line, and the kernels' streaming stores need whole lines. Large ones start
// on a 2 MB boundary, so that all of their pages can be huge ones (gru_cpu.cc asks).
template <typename T>
Array<T> aligned_array(const std::vector<py::ssize_t>& shape) {
  constexpr size_t kHuge = size_t{2} << 20;
  size_t bytes = sizeof(T);
  for (const py::ssize_t n : shape) bytes *= static_cast<size_t>(n);
  const size_t align = bytes >= 2 * kHuge ? kHuge : 64;
  bytes = std::max(align, (bytes + align - 1) / align * align);
  void* data = std::aligned_alloc(align, bytes);
  if (!data) throw std::bad_alloc();
  py::capsule owner(data, [](void* q) { std::free(q); });
  return Array<T>(shape, static_cast<T*>(data), owner);
}

template <typename T>
py::dict forward(Array<T> inputs, Array<T> h0, Array<T> u, Array<T> b,
                 std::optional<MaskArray> mask, bool reset_after, bool with_gates, int threads,
                 std::optional<Array<T>> kernel, std::optional<Array<T>> input_bias) {
  gategru::SequenceDims d;
  const Shape mshape = mask ? shape_of(*mask) : Shape{};
  const Shape kshape = kernel ? shape_of(*kernel) : Shape{};
  const Shape ibshape = input_bias ? shape_of(*input_bias) : Shape{};
  if (input_bias && !kernel) require("`input_bias` needs `kernel`: without it, add it to xw");
  require(gategru::check_forward_shapes(shape_of(inputs), shape_of(h0), shape_of(u), shape_of(b),
                                        mask ? &mshape : nullptr, &d, kernel ? &kshape : nullptr,
                                        input_bias ? &ibshape : nullptr));
  const std::vector<py::ssize_t> seq{d.batch, d.time, d.units};
  Array<T> h_seq = aligned_array<T>(seq), h_last = aligned_array<T>({d.batch, d.units});
  py::dict out;
  gategru::GruForwardParams<T> p;
  p.batch = d.batch;
  p.time = d.time;
  p.units = d.units;
  p.reset_after = reset_after;
  p.set_inputs(inputs.data(), kernel ? kernel->data() : nullptr,
               input_bias ? input_bias->data() : nullptr, d.input_width);
  p.h0 = h0.data();
  p.recurrent_kernel = u.data();
  p.recurrent_bias = b.data();
  p.mask = mask ? mask->data() : nullptr;
  p.h_seq = h_seq.mutable_data();
  p.h_last = h_last.mutable_data();
  if (with_gates) {
    Array<T> z = aligned_array<T>(seq), r = aligned_array<T>(seq), hc = aligned_array<T>(seq);
    p.update = z.mutable_data();
    p.reset = r.mutable_data();
    p.candidate = hc.mutable_data();
    out["update"] = z;
    out["reset"] = r;
    out["candidate"] = hc;
    if (reset_after) {
      Array<T> hu = aligned_array<T>(seq);
      p.hu_candidate = hu.mutable_data();
      out["hu_candidate"] = hu;
    }
  }
  {
    py::gil_scoped_release release;
    gategru::gru_forward_cpu(p, gategru::ThreadWorkers(threads));
  }
  out["h_seq"] = h_seq;
  out["h_last"] = h_last;
  return out;
}

// A None array as the op's "absent" shape: (0,) for the mask, all zeros for the rest.
template <typename A>
Shape shape_or(const std::optional<A>& a, const Shape& absent) {
  return a ? shape_of(*a) : absent;
}

template <typename T>
const T* data_or_null(const std::optional<Array<T>>& a) {
  return a ? a->data() : nullptr;
}

// A gate gradient's data; an all-zero shape is "none" to the op, and is not read.
template <typename T>
const T* gate_grad_data(const std::optional<Array<T>>& a) {
  return a && !gategru::is_absent(shape_of(*a)) ? a->data() : nullptr;
}

template <typename T>
py::tuple backward(Array<T> h0, Array<T> u, std::optional<MaskArray> mask, Array<T> h_seq,
                   Array<T> z, Array<T> r, Array<T> hc, std::optional<Array<T>> hu,
                   Array<T> d_h_seq, std::optional<Array<T>> d_h_last,
                   std::optional<Array<T>> d_z, std::optional<Array<T>> d_r,
                   std::optional<Array<T>> d_hc, bool reset_after, int threads) {
  if (reset_after && !hu) require("`hu_candidate` is required when reset_after=True");
  const Shape none3{0, 0, 0};
  gategru::BackwardOpShapes shapes{
      shape_of(h0), shape_of(u), shape_or(mask, Shape{0}), shape_of(h_seq), shape_of(z),
      shape_of(r), shape_of(hc), shape_or(hu, none3), shape_of(d_h_seq),
      shape_or(d_h_last, shape_of(h0)),  // None: zeros of h0's shape, checked through h0
      shape_or(d_z, none3), shape_or(d_r, none3), shape_or(d_hc, none3)};
  gategru::SequenceDims d;
  bool has_mask = false;
  require(gategru::check_backward_op(shapes, reset_after, &d, &has_mask));
  const int64_t B = d.batch, T_ = d.time, H = d.units;
  gategru::GruBackwardParams<T> p;
  p.batch = B;
  p.time = T_;
  p.units = H;
  p.reset_after = reset_after;
  p.h0 = h0.data();
  p.recurrent_kernel = u.data();
  p.mask = has_mask ? mask->data() : nullptr;
  p.h_seq = h_seq.data();
  p.update = z.data();
  p.reset = r.data();
  p.candidate = hc.data();
  p.hu_candidate = reset_after ? hu->data() : nullptr;
  p.d_h_seq = d_h_seq.data();
  p.d_h_last = data_or_null(d_h_last);
  p.d_update = gate_grad_data(d_z);
  p.d_reset = gate_grad_data(d_r);
  p.d_candidate = gate_grad_data(d_hc);
  Array<T> d_xw = aligned_array<T>({B, T_, 3 * H});
  Array<T> d_h0 = aligned_array<T>({B, H});
  p.d_xw = d_xw.mutable_data();
  p.d_h0 = d_h0.mutable_data();
  {
    py::gil_scoped_release release;
    gategru::gru_backward_cpu(p, gategru::ThreadWorkers(threads));
  }
  return py::make_tuple(d_xw, d_h0);
}

// Float arrays follow the dtype of the first one (float32 or float64); others are cast to it.
template <typename R, typename Fn32, typename Fn64>
R by_dtype(const py::array& first, const char* name, Fn32 f32, Fn64 f64) {
  if (first.dtype().is(py::dtype::of<float>())) return f32();
  if (first.dtype().is(py::dtype::of<double>())) return f64();
  throw py::type_error(std::string("`") + name + "` must be float32 or float64, got " +
                       py::str(first.dtype()).cast<std::string>());
}

template <typename T>
std::optional<Array<T>> opt(const py::object& o) {
  if (o.is_none()) return std::nullopt;
  return o.cast<Array<T>>();
}

// None, or as for the op, shape (0,), means no mask.
std::optional<MaskArray> opt_mask(const py::object& o) {
  if (o.is_none()) return std::nullopt;
  MaskArray mask = o.cast<MaskArray>();
  if (gategru::is_none_vector(shape_of(mask))) return std::nullopt;
  return mask;
}

py::dict forward_any(const py::array& inputs, const py::object& h0, const py::object& u,
                     const py::object& b, const py::object& mask, bool reset_after,
                     bool with_gates, int threads, const py::object& kernel,
                     const py::object& input_bias) {
  auto call = [&](auto tag) {
    using T = decltype(tag);
    return forward<T>(inputs.cast<Array<T>>(), h0.cast<Array<T>>(), u.cast<Array<T>>(),
                      b.cast<Array<T>>(), opt_mask(mask), reset_after, with_gates, threads,
                      opt<T>(kernel), opt<T>(input_bias));
  };
  return by_dtype<py::dict>(inputs, "inputs", [&] { return call(float{}); },
                            [&] { return call(double{}); });
}

py::tuple backward_any(const py::object& h0, const py::object& u, const py::object& mask,
                       const py::array& h_seq, const py::object& z, const py::object& r,
                       const py::object& hc, const py::object& hu, const py::object& d_h_seq,
                       const py::object& d_h_last, const py::object& d_z, const py::object& d_r,
                       const py::object& d_hc, bool reset_after, int threads) {
  auto call = [&](auto tag) {
    using T = decltype(tag);
    return backward<T>(h0.cast<Array<T>>(), u.cast<Array<T>>(), opt_mask(mask),
                       h_seq.cast<Array<T>>(), z.cast<Array<T>>(), r.cast<Array<T>>(),
                       hc.cast<Array<T>>(), opt<T>(hu), d_h_seq.cast<Array<T>>(), opt<T>(d_h_last),
                       opt<T>(d_z), opt<T>(d_r), opt<T>(d_hc), reset_after, threads);
  };
  return by_dtype<py::tuple>(h_seq, "h_seq", [&] { return call(float{}); },
                             [&] { return call(double{}); });
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "gategru's framework-free GRU kernels over numpy (no TensorFlow needed).";
  m.def(
      "cpu_isa", [] { return gategru::cpu_isa_name(gategru::selected_cpu_isa()); },
      "The instruction set the CPU kernels run with now (avx512, avx2 or baseline); "
      "GATEGRU_CPU_ISA=avx2|baseline asks for a lower one.");
  m.def("forward", &forward_any, py::arg("inputs"), py::arg("h0"), py::arg("recurrent_kernel"),
        py::arg("recurrent_bias"), py::arg("mask") = py::none(), py::arg("reset_after") = true,
        py::arg("with_gates") = true, py::arg("threads") = 0, py::arg("kernel") = py::none(),
        py::arg("input_bias") = py::none(),
        "GRU over a whole sequence on the CPU.\n\n"
        "inputs: the input projections xw (B,T,3H) = x·W + b_in, or, with kernel (I,3H) and "
        "input_bias (3H,), the inputs x (B,T,I), projected inside each step. h0 (B,H), "
        "recurrent_kernel (H,3H), recurrent_bias (3H,), mask (B,T) bool or None. inputs' "
        "dtype (float32 or float64) is the compute dtype; the other float arrays are cast "
        "to it. Returns a dict with h_seq (B,T,H), "
        "h_last (B,H) and, with with_gates, update, reset, candidate (B,T,H) and, with "
        "reset_after, hu_candidate (B,T,H), which backward needs. threads=0: all cores.");
  m.def("backward", &backward_any, py::arg("h0"), py::arg("recurrent_kernel"), py::arg("mask"),
        py::arg("h_seq"), py::arg("update"), py::arg("reset"), py::arg("candidate"),
        py::arg("hu_candidate"), py::arg("d_h_seq"), py::arg("d_h_last") = py::none(),
        py::arg("d_update") = py::none(), py::arg("d_reset") = py::none(),
        py::arg("d_candidate") = py::none(), py::arg("reset_after") = true,
        py::arg("threads") = 0,
        "Backward of forward(): returns (d_xw (B,T,3H), d_h0 (B,H)), d_xw being the "
        "gradient of the pre-activations. Weight gradients are sums over time that the "
        "caller forms with matmuls. h_seq's dtype is the compute dtype.");
#ifdef GATEGRU_WITH_CUDA
  gategru::register_cuda_bindings(m);
#else
  m.def("cuda_available", [] {
    return py::make_tuple(false, "gategru was built without CUDA (no nvcc, or GATEGRU_CUDA=OFF)");
  }, "(available, message): always False here; this build has no CUDA kernels.");
#endif
}
