// The CUDA kernels over device arrays (__cuda_array_interface__: PyTorch CUDA tensors,
// CuPy arrays), for machines without TensorFlow. Registered into the _kernels module
// when gategru is built with CUDA (GATEGRU_WITH_CUDA).
#pragma once
#include <pybind11/pybind11.h>

namespace gategru {

// Adds forward_cuda, backward_cuda, cuda_available and cuda_launch_plan to `m`.
void register_cuda_bindings(pybind11::module_& m);

}  // namespace gategru
