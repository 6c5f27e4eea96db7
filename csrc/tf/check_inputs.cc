#include "check_inputs.h"

#include <string>

namespace gategru {
namespace {

Shape shape_of(const tensorflow::Tensor& t) {
  Shape s;
  for (int i = 0; i < t.dims(); ++i) s.push_back(t.dim_size(i));
  return s;
}

absl::Status as_status(const std::string& err) {
  return err.empty() ? absl::OkStatus() : absl::InvalidArgumentError(err);
}

// A mask is (B, T) bool, or empty for none.
absl::Status check_mask(const tensorflow::Tensor& mask, const SequenceDims& d, bool* has_mask) {
  *has_mask = mask.NumElements() > 0 || mask.dims() == 2;
  if (!*has_mask) return absl::OkStatus();
  return as_status(check_same_shape("mask", shape_of(mask), {d.batch, d.time}));
}

}  // namespace

absl::Status check_forward_inputs(tensorflow::OpKernelContext* ctx, SequenceDims* dims,
                                  bool* has_mask, bool* projects) {
  const Shape kernel = shape_of(ctx->input(5)), input_bias = shape_of(ctx->input(6));
  const Shape none{0};
  *projects = kernel != none;
  if (!*projects && input_bias != none)
    return as_status("`input_bias` must have shape (0,) without `kernel` (add it to xw), got " +
                     shape_str(input_bias));
  TF_RETURN_IF_ERROR(as_status(check_forward_shapes(
      shape_of(ctx->input(0)), shape_of(ctx->input(1)), shape_of(ctx->input(2)),
      shape_of(ctx->input(3)), nullptr, dims, *projects ? &kernel : nullptr, &input_bias)));
  return check_mask(ctx->input(4), *dims, has_mask);
}

absl::Status check_backward_inputs(tensorflow::OpKernelContext* ctx, bool reset_after,
                                   SequenceDims* dims, bool* has_mask) {
  const Shape h_seq = shape_of(ctx->input(3));
  const Shape kernel = shape_of(ctx->input(1));
  if (h_seq.size() != 3) return as_status("`h_seq` must have rank 3, got " + shape_str(h_seq));
  if (kernel.size() != 2) {
    return as_status("`recurrent_kernel` must have rank 2, got " + shape_str(kernel));
  }
  *dims = {h_seq[0], h_seq[1], h_seq[2]};
  const Shape seq{dims->batch, dims->time, dims->units};
  const Shape state{dims->batch, dims->units};
  TF_RETURN_IF_ERROR(
      as_status(check_same_shape("recurrent_kernel", kernel, {dims->units, 3 * dims->units})));
  TF_RETURN_IF_ERROR(as_status(check_same_shape("h0", shape_of(ctx->input(0)), state)));
  TF_RETURN_IF_ERROR(check_mask(ctx->input(2), *dims, has_mask));
  const struct {
    int index;
    const char* name;
    bool optional;
    Shape shape;
  } rules[] = {
      {4, "update", false, seq},           {5, "reset", false, seq},
      {6, "candidate", false, seq},        {7, "hu_candidate", !reset_after, seq},
      {8, "d_h_seq", false, seq},          {9, "d_h_last", false, state},
      {10, "d_update", true, seq},         {11, "d_reset", true, seq},
      {12, "d_candidate", true, seq},
  };
  for (const auto& rule : rules) {
    const tensorflow::Tensor& t = ctx->input(rule.index);
    if (rule.optional && t.NumElements() == 0) continue;
    TF_RETURN_IF_ERROR(as_status(check_same_shape(rule.name, shape_of(t), rule.shape)));
  }
  return absl::OkStatus();
}

}  // namespace gategru
