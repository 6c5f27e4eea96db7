// Input validation shared by every GateGru kernel (CPU and GPU, forward and backward).
#pragma once
#include "../core/shape_check.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace gategru {

// Validates every input of GateGruForward; `projects`: a kernel was given (inputs are x).
absl::Status check_forward_inputs(tensorflow::OpKernelContext* ctx, SequenceDims* dims,
                                  bool* has_mask, bool* projects);

// Validates every input of GateGruBackward; gate gradients may be empty (no gate loss).
absl::Status check_backward_inputs(tensorflow::OpKernelContext* ctx, bool reset_after,
                                   SequenceDims* dims, bool* has_mask);

// Data pointer of an input, or null when the input is empty (an absent optional).
template <typename T>
const T* optional_input(tensorflow::OpKernelContext* ctx, int index) {
  const tensorflow::Tensor& t = ctx->input(index);
  return t.NumElements() == 0 ? nullptr : t.flat<T>().data();
}

}  // namespace gategru
