// Error handling for the CUDA host code: every runtime call is checked, and the first
// failure is returned to the caller as a cudaError_t in an int (0 = success).
#pragma once
#include <cuda_runtime.h>

// Returns from the enclosing int-returning function when `expr` (a cudaError_t, or an int
// from one of our own launch helpers) is not success.
#define CHECK_CUDA(expr)                                            \
  do {                                                              \
    const int gategru_err_ = static_cast<int>(expr);                \
    if (gategru_err_ != static_cast<int>(cudaSuccess)) return gategru_err_; \
  } while (0)
