// Op schemas and shape functions. Kernels live in gru_kernels_{cpu,gpu}.cc.
#include <string>

#include "../core/shape_check.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace gategru {
namespace {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// The op's first N inputs as Shapes, when every one of them is fully known.
template <size_t N>
bool known_shapes(InferenceContext* c, const std::array<Shape*, N>& out) {
  for (size_t i = 0; i < N; ++i) {
    const ShapeHandle in = c->input(static_cast<int>(i));
    if (!c->FullyDefined(in)) return false;
    out[i]->clear();
    for (int d = 0; d < c->Rank(in); ++d) out[i]->push_back(c->Value(c->Dim(in, d)));
  }
  return true;
}

// With partly known shapes, TF's merge errors say only "Dimensions must be equal": put the
// rule, naming the argument, in front.
absl::Status named(const absl::Status& s, const char* rule) {
  if (s.ok()) return s;
  return absl::InvalidArgumentError(std::string(rule) + " (" + std::string(s.message()) + ")");
}

// Reads (B, T, H) from a sequence input (last dim width_factor·H), h0 and the recurrent
// kernel, merging what they must agree on.
absl::Status sequence_dims(InferenceContext* c, int seq_index, int width_factor, int h0_index,
                           int kernel_index, DimensionHandle* b, DimensionHandle* t,
                           DimensionHandle* h) {
  constexpr const char* kSeq = "the sequence input must have rank 3";
  constexpr const char* kH0 = "`h0` must have shape (batch, units)";
  constexpr const char* kKernel = "`recurrent_kernel` must have shape (units, 3*units)";
  ShapeHandle seq, h0, kernel;
  TF_RETURN_IF_ERROR(named(c->WithRank(c->input(seq_index), 3, &seq), kSeq));
  TF_RETURN_IF_ERROR(named(c->WithRank(c->input(h0_index), 2, &h0), kH0));
  TF_RETURN_IF_ERROR(named(c->WithRank(c->input(kernel_index), 2, &kernel), kKernel));
  *h = c->Dim(kernel, 0);
  TF_RETURN_IF_ERROR(named(c->Merge(*h, c->Dim(h0, 1), h), kH0));
  DimensionHandle three_h, width;
  TF_RETURN_IF_ERROR(c->Multiply(*h, 3, &three_h));
  TF_RETURN_IF_ERROR(named(c->Merge(three_h, c->Dim(kernel, 1), &three_h), kKernel));
  if (width_factor > 0) {  // 0: the width is not a multiple of H (checked by the caller)
    TF_RETURN_IF_ERROR(c->Multiply(*h, width_factor, &width));
    TF_RETURN_IF_ERROR(named(c->Merge(width, c->Dim(seq, 2), &width),
                             "the sequence input's last dimension must be a multiple of units"));
  }
  TF_RETURN_IF_ERROR(named(c->Merge(c->Dim(seq, 0), c->Dim(h0, 0), b), kH0));
  *t = c->Dim(seq, 1);
  return absl::OkStatus();
}

// Output shapes from (B, T, H) and the attributes.
absl::Status set_forward_outputs(InferenceContext* c, DimensionHandle b, DimensionHandle t,
                                 DimensionHandle h) {
  bool reset_after = true, with_gates = true, keep_cache = true;
  TF_RETURN_IF_ERROR(c->GetAttr("reset_after", &reset_after));
  TF_RETURN_IF_ERROR(c->GetAttr("with_gates", &with_gates));
  TF_RETURN_IF_ERROR(c->GetAttr("keep_cache", &keep_cache));
  const ShapeHandle seq = c->MakeShape({b, t, h});
  const ShapeHandle empty = c->MakeShape({0, 0, 0});
  c->set_output(0, seq);
  c->set_output(1, c->MakeShape({b, h}));
  for (int i = 2; i < 5; ++i) c->set_output(i, with_gates ? seq : empty);
  c->set_output(5, with_gates && reset_after && keep_cache ? seq : empty);
  return absl::OkStatus();
}

// With a kernel (I,3H), inputs are x (B,T,I); without one (shape (0,)), xw (B,T,3H).
// Fully known shapes get the kernels' own check (the same message at graph time as at run
// time); partly known ones are merged as far as they are known.
absl::Status forward_shape(InferenceContext* c) {
  ForwardOpShapes s;
  if (known_shapes(c, s.in_op_order())) {
    SequenceDims d;
    bool has_mask = false, projects = false;
    const std::string err = check_forward_op(s, &d, &has_mask, &projects);
    if (!err.empty()) return absl::InvalidArgumentError(err);
    return set_forward_outputs(c, c->MakeDim(d.batch), c->MakeDim(d.time), c->MakeDim(d.units));
  }
  ShapeHandle kernel = c->input(5);
  // Unknown rank: either form is possible, so neither form's widths are merged.
  const bool kernel_known = c->RankKnown(kernel);
  const bool projects = !(kernel_known && c->Rank(kernel) == 1);
  DimensionHandle b, t, h;
  TF_RETURN_IF_ERROR(sequence_dims(c, /*inputs*/ 0, projects ? 0 : 3, 1, 2, &b, &t, &h));
  constexpr const char* kBias = "`recurrent_bias` must have shape (3*units,)";
  ShapeHandle bias;
  TF_RETURN_IF_ERROR(named(c->WithRank(c->input(3), 1, &bias), kBias));
  DimensionHandle three_h;
  TF_RETURN_IF_ERROR(c->Multiply(h, 3, &three_h));
  TF_RETURN_IF_ERROR(named(c->Merge(c->Dim(bias, 0), three_h, &three_h), kBias));
  if (projects && kernel_known) {
    constexpr const char* kKernel = "`kernel` must have shape (input_width, 3*units)";
    TF_RETURN_IF_ERROR(named(c->WithRank(kernel, 2, &kernel), kKernel));
    DimensionHandle width;
    TF_RETURN_IF_ERROR(named(c->Merge(c->Dim(kernel, 1), three_h, &three_h), kKernel));
    TF_RETURN_IF_ERROR(named(c->Merge(c->Dim(kernel, 0), c->Dim(c->input(0), 2), &width),
                             "`inputs` must have shape (batch, timesteps, input_width)"));
    constexpr const char* kInputBias = "`input_bias` must have shape (3*units,)";
    ShapeHandle input_bias;
    TF_RETURN_IF_ERROR(named(c->WithRank(c->input(6), 1, &input_bias), kInputBias));
    TF_RETURN_IF_ERROR(named(c->Merge(c->Dim(input_bias, 0), three_h, &three_h), kInputBias));
  }
  return set_forward_outputs(c, b, t, h);
}

absl::Status backward_shape(InferenceContext* c) {
  bool reset_after = true;
  TF_RETURN_IF_ERROR(c->GetAttr("reset_after", &reset_after));
  BackwardOpShapes s;
  DimensionHandle b, t, h;
  if (known_shapes(c, s.in_op_order())) {
    SequenceDims d;
    bool has_mask = false;
    const std::string err = check_backward_op(s, reset_after, &d, &has_mask);
    if (!err.empty()) return absl::InvalidArgumentError(err);
    b = c->MakeDim(d.batch), t = c->MakeDim(d.time), h = c->MakeDim(d.units);
  } else {
    TF_RETURN_IF_ERROR(sequence_dims(c, /*h_seq*/ 3, 1, 0, 1, &b, &t, &h));
  }
  DimensionHandle three_h;
  TF_RETURN_IF_ERROR(c->Multiply(h, 3, &three_h));
  c->set_output(0, c->MakeShape({b, t, three_h}));
  c->set_output(1, c->MakeShape({b, h}));
  c->set_output(2, reset_after ? c->MakeShape({b, t, three_h}) : c->MakeShape({0, 0, 0}));
  return absl::OkStatus();
}

}  // namespace
}  // namespace gategru

REGISTER_OP("GateGruForward")
    .Input("inputs: T")
    .Input("h0: T")
    .Input("recurrent_kernel: T")
    .Input("recurrent_bias: T")
    .Input("mask: bool")
    .Input("kernel: T")
    .Input("input_bias: T")
    .Output("h_seq: T")
    .Output("h_last: T")
    .Output("update: T")
    .Output("reset: T")
    .Output("candidate: T")
    .Output("hu_candidate: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("reset_after: bool = true")
    .Attr("with_gates: bool = true")
    .Attr("keep_cache: bool = true")
    .SetShapeFn(gategru::forward_shape)
    .Doc(R"doc(
A GRU over a whole sequence, writing its gates. inputs: the projections xw (B,T,3H) =
x·W + b_in when kernel and input_bias have shape (0,); else x (B,T,I) with kernel (I,3H)
and input_bias (3H), projected inside the op. h0 (B,H); recurrent_kernel (H,3H);
recurrent_bias (3H); mask (B,T) bool, or (0,) for none.
Outputs h_seq (B,T,H), h_last (B,H), update/reset/candidate (B,T,H) and hu_candidate
(B,T,H, reset_after only), which the backward op needs; absent outputs have shape (0,0,0).
with_gates=false writes no gates, keep_cache=false no hu_candidate (inference): the
gradient then recomputes what it needs with one more forward.
)doc");

REGISTER_OP("GateGruBackward")
    .Input("h0: T")
    .Input("recurrent_kernel: T")
    .Input("mask: bool")
    .Input("h_seq: T")
    .Input("update: T")
    .Input("reset: T")
    .Input("candidate: T")
    .Input("hu_candidate: T")
    .Input("d_h_seq: T")
    .Input("d_h_last: T")
    .Input("d_update: T")
    .Input("d_reset: T")
    .Input("d_candidate: T")
    .Output("d_xw: T")
    .Output("d_h0: T")
    .Output("d_hu: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("reset_after: bool = true")
    .SetShapeFn(gategru::backward_shape)
    .Doc(R"doc(
Backward of GateGruForward: d_xw (B,T,3H) is the gradient of every pre-activation, d_h0
(B,H), and d_hu (B,T,3H; reset_after only, else (0,0,0)) the gradient of h_prev·U + b_rec,
[da_z, da_r, da_h·r], from which the recurrent kernel's gradient is one matmul. Gate
gradients may be (0,0,0) when no loss reaches the gates.
)doc");
