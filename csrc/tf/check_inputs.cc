#include "check_inputs.h"

#include <string>

namespace gategru {
namespace {

Shape shape_of(const tensorflow::Tensor& t) {
  Shape s;
  for (int i = 0; i < t.dims(); ++i) s.push_back(t.dim_size(i));
  return s;
}

// The op's first N inputs' shapes, in registration order.
template <size_t N>
void read_shapes(tensorflow::OpKernelContext* ctx, const std::array<Shape*, N>& out) {
  for (size_t i = 0; i < N; ++i) *out[i] = shape_of(ctx->input(static_cast<int>(i)));
}

absl::Status as_status(const std::string& err) {
  return err.empty() ? absl::OkStatus() : absl::InvalidArgumentError(err);
}

}  // namespace

absl::Status check_forward_inputs(tensorflow::OpKernelContext* ctx, SequenceDims* dims,
                                  bool* has_mask, bool* projects) {
  ForwardOpShapes s;
  read_shapes(ctx, s.in_op_order());
  return as_status(check_forward_op(s, dims, has_mask, projects));
}

absl::Status check_backward_inputs(tensorflow::OpKernelContext* ctx, bool reset_after,
                                   SequenceDims* dims, bool* has_mask) {
  BackwardOpShapes s;
  read_shapes(ctx, s.in_op_order());
  return as_status(check_backward_op(s, reset_after, dims, has_mask));
}

}  // namespace gategru
