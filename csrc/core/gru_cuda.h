// Host API of the CUDA GRU kernels. Plain C++: includers need no CUDA header. Every
// launcher returns a cudaError_t as an int (0 = success); cuda_error_string() words it.
// Pointers in the params are device pointers; nothing here synchronizes the host.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "gru_params.h"

namespace gategru {

// How a sequence is organized on the GPU. kAuto takes the persistent cooperative kernel
// (one launch, a grid barrier per step) when every block and its weight slice fit on the
// device at once, else one fused kernel per step (per phase). Forcing kPersistent where it
// does not fit returns cudaErrorNotSupported.
enum class CudaPath { kAuto = 0, kPersistent = 1, kPerStep = 2 };

// Whether this process can run the kernels, and if not, why (plainly).
struct CudaSupport {
  bool available = false;
  int device_count = 0;
  int driver_version = 0;   // highest CUDA version the driver supports, e.g. 13000; 0: none
  int runtime_version = 0;  // CUDA runtime linked into this library
  std::string message;      // the reason when unavailable, else device 0's name
};
CudaSupport cuda_support();

// "cudaErrorX (code N): text", with the driver hint for cudaErrorInsufficientDriver (35).
std::string cuda_error_string(int code);

// The launch a call would make on the current device; for logs and benchmarks.
struct CudaLaunchPlan {
  bool persistent = false;
  int64_t blocks_x = 0;        // unit slices
  int64_t blocks_y = 0;        // batch chunks
  int slice_width = 0;         // hidden units per block
  int warps_per_row = 0;       // warps splitting one row group's dot products
  int64_t rows_per_block = 0;
  size_t smem_bytes = 0;       // dynamic shared memory of the persistent kernel
  std::string reason;          // why this path
};
template <typename T>
int gru_cuda_plan(bool backward, int64_t batch, int64_t units, bool reset_after, CudaPath path,
                  CudaLaunchPlan* plan);

// Scratch bytes the caller must pass to the launchers (independent of the device).
template <typename T>
size_t gru_forward_cuda_workspace(const GruForwardParams<T>& p);
template <typename T>
size_t gru_backward_cuda_workspace(const GruBackwardParams<T>& p);

// `stream` is a cudaStream_t (null: the legacy default stream). `workspace` is device
// memory of at least the *_workspace() bytes, used only until the work queued on `stream`
// completes.
template <typename T>
int gru_forward_cuda(const GruForwardParams<T>& p, void* stream, void* workspace,
                     size_t workspace_bytes, CudaPath path = CudaPath::kAuto);
template <typename T>
int gru_backward_cuda(const GruBackwardParams<T>& p, void* stream, void* workspace,
                      size_t workspace_bytes, CudaPath path = CudaPath::kAuto);

}  // namespace gategru
