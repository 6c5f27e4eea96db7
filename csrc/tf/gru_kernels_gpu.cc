// GPU launchers: the CUDA kernels (csrc/core/*.cu) on TensorFlow's stream. Compiled by
// the host compiler with GOOGLE_CUDA=1 and no CUDA header: the device type is a tag of
// our own (Eigen::GpuDevice would need EIGEN_USE_GPU and the CUDA headers), the stream
// comes from the op's device context, scratch from TF's allocator. Every input stays in
// device memory (the kernels read the mask there); the host never waits.
#include <string>
#include <type_traits>

#include "../core/gru_cuda.h"
#include "gru_op_kernels.h"
#include "params_map.h"
#include "tensorflow/core/framework/register_types.h"
#include "xla/stream_executor/stream.h"

namespace gategru {

// Stands for the GPU device in Launcher<Device, T> and the OpKernel templates.
struct GpuDeviceTag {};

namespace {

// TF's CUDA stream for this op (what GetGpuStream returns), or null.
void* tf_stream(tensorflow::OpKernelContext* ctx) {
  tensorflow::DeviceContext* dc = ctx->op_device_context();
  if (dc == nullptr || dc->stream() == nullptr) return nullptr;
  return dc->stream()->platform_specific_handle().stream;
}

// Allocates the workspace as a temporary tensor and runs `launch(stream, ws, bytes)`.
template <typename LaunchFn>
void run(tensorflow::OpKernelContext* ctx, const char* op, size_t workspace_bytes,
         LaunchFn launch) {
  void* stream = tf_stream(ctx);
  OP_REQUIRES(ctx, stream != nullptr,
              absl::InternalError(std::string(op) + ": no CUDA stream in the op's context"));
  tensorflow::Tensor scratch;
  void* workspace = nullptr;
  if (workspace_bytes > 0) {
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(
                            tensorflow::DT_INT8,
                            tensorflow::TensorShape({static_cast<int64_t>(workspace_bytes)}),
                            &scratch));
    workspace = scratch.data();
  }
  const int rc = launch(stream, workspace, workspace_bytes);
  OP_REQUIRES(ctx, rc == 0,
              absl::InternalError(std::string(op) + " CUDA kernel: " + cuda_error_string(rc)));
}

}  // namespace

// The kernels' element type for TF's: the 16-bit types have the same bits.
template <typename T>
struct KernelType {
  using type = T;
};
template <>
struct KernelType<Eigen::half> {
  using type = Half;
};
template <>
struct KernelType<Eigen::bfloat16> {
  using type = BFloat16;
};

template <typename K, typename Params>
auto as_kernel_type(const Params& p) {
  auto cast = [](auto* ptr, int64_t) {
    using Src = std::remove_pointer_t<decltype(ptr)>;
    using Dst = std::conditional_t<std::is_const_v<Src>, const K, K>;
    static_assert(sizeof(Src) == sizeof(Dst));
    return reinterpret_cast<Dst*>(ptr);
  };
  return map_params<K>(p, cast, cast);
}

template <typename T>
struct Launcher<GpuDeviceTag, T> {
  using K = typename KernelType<T>::type;
  static void forward(tensorflow::OpKernelContext* ctx, const GruForwardParams<T>& params) {
    const GruForwardParams<K> p = as_kernel_type<K>(params);
    run(ctx, "GateGruForward", gru_forward_cuda_workspace(p),
        [&p](void* s, void* ws, size_t n) { return gru_forward_cuda(p, s, ws, n); });
  }
  static void backward(tensorflow::OpKernelContext* ctx, const GruBackwardParams<T>& params) {
    const GruBackwardParams<K> p = as_kernel_type<K>(params);
    run(ctx, "GateGruBackward", gru_backward_cuda_workspace(p),
        [&p](void* s, void* ws, size_t n) { return gru_backward_cuda(p, s, ws, n); });
  }
};

#define GATEGRU_REGISTER_GPU(T)                                                          \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("GateGruForward").Device(tensorflow::DEVICE_GPU).TypeConstraint<T>("T"),      \
      GateGruForwardOp<GpuDeviceTag, T>);                                                \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("GateGruBackward").Device(tensorflow::DEVICE_GPU).TypeConstraint<T>("T"),     \
      GateGruBackwardOp<GpuDeviceTag, T>);
GATEGRU_REGISTER_GPU(Eigen::half)
GATEGRU_REGISTER_GPU(Eigen::bfloat16)
GATEGRU_REGISTER_GPU(float)
GATEGRU_REGISTER_GPU(double)
#undef GATEGRU_REGISTER_GPU

}  // namespace gategru
