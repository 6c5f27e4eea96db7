// gru_cuda_plan without cuda_support.cu, which needs the real runtime (tools/cuda_emulation).
#include "gru_cuda_common.cuh"
namespace gategru {
template <typename T>
int gru_cuda_plan(bool backward, int64_t batch, int64_t units, bool reset_after, CudaPath path, CudaLaunchPlan* plan) {
  const void* kernel = backward ? cuda_detail::backward_persistent_kernel<T>(reset_after) : cuda_detail::forward_persistent_kernel<T>(reset_after);
  return cuda_detail::plan_launch<T>(kernel, batch, units, path, plan);
}
template int gru_cuda_plan<double>(bool, int64_t, int64_t, bool, CudaPath, CudaLaunchPlan*);
}
