// The op's shape rules, written once for the TF glue and the pybind11 module. Each check
// returns an empty string when the shapes are valid, else a message naming the argument.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace gategru {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);

struct SequenceDims {
  int64_t batch = 0, time = 0, units = 0;
  int64_t input_width = 0;  // with a kernel only
};

// inputs, h0 (B,H), recurrent_kernel (H,3H), recurrent_bias (3H), mask (B,T) or absent.
// Without a kernel, inputs are the projections xw (B,T,3H); with one, inputs are x (B,T,I),
// kernel is (I,3H) and input_bias (3H).
std::string check_forward_shapes(const Shape& inputs, const Shape& h0,
                                 const Shape& recurrent_kernel, const Shape& recurrent_bias,
                                 const Shape* mask, SequenceDims* dims,
                                 const Shape* kernel = nullptr,
                                 const Shape* input_bias = nullptr);

// Every named tensor must have exactly the expected shape.
std::string check_same_shape(const char* name, const Shape& actual, const Shape& expected);

// An absent mask, kernel or input_bias has shape (0,), what gategru passes for "none".
bool is_none_vector(const Shape& s);
// An absent hu_candidate or gate gradient has every dimension 0, e.g. (0, 0, 0) (what the
// forward returns for a gate it did not write); no other shape can pass for "none".
bool is_absent(const Shape& s);

// The inputs of GateGruForward as the op receives them (absent mask, kernel, input_bias).
struct ForwardOpShapes {
  Shape inputs, h0, recurrent_kernel, recurrent_bias, mask, kernel, input_bias;
  // The fields in the op's input order (its registration in csrc/tf/ops.cc).
  std::array<Shape*, 7> in_op_order() {
    return {&inputs, &h0, &recurrent_kernel, &recurrent_bias, &mask, &kernel, &input_bias};
  }
};
// Checked once for the op kernels (CPU and GPU) and the graph-time shape function, so both
// say the same thing. `projects`: a kernel was given (inputs are x, not xw).
std::string check_forward_op(const ForwardOpShapes& s, SequenceDims* dims, bool* has_mask,
                             bool* projects);

// The inputs of GateGruBackward; hu_candidate is required with reset_after, the gate
// gradients are optional (absent: no loss reaches the gates).
struct BackwardOpShapes {
  Shape h0, recurrent_kernel, mask, h_seq, update, reset, candidate, hu_candidate, d_h_seq,
      d_h_last, d_update, d_reset, d_candidate;
  // The fields in the op's input order (its registration in csrc/tf/ops.cc).
  std::array<Shape*, 13> in_op_order() {
    return {&h0,           &recurrent_kernel, &mask,    &h_seq,   &update,
            &reset,        &candidate,        &hu_candidate, &d_h_seq, &d_h_last,
            &d_update,     &d_reset,          &d_candidate};
  }
};
std::string check_backward_op(const BackwardOpShapes& s, bool reset_after, SequenceDims* dims,
                              bool* has_mask);

}  // namespace gategru
