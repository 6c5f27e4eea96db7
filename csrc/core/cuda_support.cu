// Whether the CUDA kernels can run here, error wording, and the launch plan query.
#include <string>

#include "gru_cuda_common.cuh"

namespace gategru {
namespace {

std::string cuda_version_str(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

// What to do about an old driver; `code` is 35 (older than the toolkit) or 36 (an entry
// point missing).
std::string driver_hint(cudaError_t code) {
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  if (driver == 0) return " No NVIDIA driver was found (libcuda.so.1): no GPU here, or no driver.";
  const std::string built = "this library was built with CUDA " + cuda_version_str(runtime);
  if (code == cudaErrorCallRequiresNewerDriver && driver >= runtime) {
    return " The driver reports CUDA " + cuda_version_str(driver) + " and " + built +
           ", but the driver lacks an entry point the runtime needs: update the driver.";
  }
  return " The driver supports CUDA " + cuda_version_str(driver) + "; " + built +
         ", whose code needs a driver of that CUDA version or newer (R580+ for CUDA 13): "
         "update the driver, or rebuild gategru with the toolkit the driver supports.";
}

}  // namespace

std::string cuda_error_string(int code) {
  const auto err = static_cast<cudaError_t>(code);
  std::string s = std::string(cudaGetErrorName(err)) + " (code " + std::to_string(code) +
                  "): " + cudaGetErrorString(err) + ".";
  if (err == cudaErrorInsufficientDriver || err == cudaErrorCallRequiresNewerDriver) {
    s += driver_hint(err);
  }
  return s;
}

CudaSupport cuda_support() {
  CudaSupport s;
  cudaRuntimeGetVersion(&s.runtime_version);
  cudaDriverGetVersion(&s.driver_version);  // 0 when no driver is installed
  const cudaError_t err = cudaGetDeviceCount(&s.device_count);
  if (err != cudaSuccess) {
    s.device_count = 0;
    if (err == cudaErrorInsufficientDriver && s.driver_version == 0) {
      s.message = "no NVIDIA driver found (libcuda.so.1 could not be loaded): this machine "
                  "has no GPU or no driver (cudaErrorInsufficientDriver, code 35)";
    } else if (err == cudaErrorInsufficientDriver) {
      s.message = "the NVIDIA driver is too old." + driver_hint(err) +
                  " (cudaErrorInsufficientDriver, code 35)";
    } else if (err == cudaErrorCallRequiresNewerDriver) {
      // a driver new enough to start the runtime but missing an entry point it needs
      s.message = "the NVIDIA driver is too old for a CUDA call this library makes." +
                  driver_hint(err) + " (cudaErrorCallRequiresNewerDriver, code 36)";
    } else if (err == cudaErrorNoDevice) {
      s.message = "no CUDA device is visible (cudaErrorNoDevice)";
    } else {
      s.message = "CUDA is unusable: " + cuda_error_string(err);
    }
    cudaGetLastError();  // the query's error is ours to report, not sticky
    return s;
  }
  if (s.device_count == 0) {
    s.message = "no CUDA device is visible";
    return s;
  }
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
    s.message = std::string(prop.name) + " (sm_" + std::to_string(prop.major) +
                std::to_string(prop.minor) + ", " + std::to_string(prop.multiProcessorCount) +
                " SMs), driver CUDA " + cuda_version_str(s.driver_version);
  }
  s.available = true;
  return s;
}

template <typename T>
int gru_cuda_plan(bool backward, int64_t batch, int64_t units, bool reset_after, CudaPath path,
                  CudaLaunchPlan* plan) {
  const void* kernel = backward ? cuda_detail::backward_persistent_kernel<T>(reset_after)
                                : cuda_detail::forward_persistent_kernel<T>(reset_after);
  return cuda_detail::plan_launch<cuda_detail::AccOf<T>>(kernel, batch, units, path, plan);
}

template int gru_cuda_plan<float>(bool, int64_t, int64_t, bool, CudaPath, CudaLaunchPlan*);
template int gru_cuda_plan<double>(bool, int64_t, int64_t, bool, CudaPath, CudaLaunchPlan*);
template int gru_cuda_plan<Half>(bool, int64_t, int64_t, bool, CudaPath, CudaLaunchPlan*);
template int gru_cuda_plan<BFloat16>(bool, int64_t, int64_t, bool, CudaPath, CudaLaunchPlan*);

}  // namespace gategru
