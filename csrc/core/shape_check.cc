#include "shape_check.h"

#include <sstream>

namespace gategru {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << (s.size() == 1 ? ",)" : ")");
  return os.str();
}

std::string check_same_shape(const char* name, const Shape& actual, const Shape& expected) {
  if (actual == expected) return {};
  return std::string("`") + name + "` must have shape " + shape_str(expected) + ", got " +
         shape_str(actual);
}

std::string check_forward_shapes(const Shape& inputs, const Shape& h0,
                                 const Shape& recurrent_kernel, const Shape& recurrent_bias,
                                 const Shape* mask, SequenceDims* dims, const Shape* kernel,
                                 const Shape* input_bias) {
  if (recurrent_kernel.size() != 2 || recurrent_kernel[1] != 3 * recurrent_kernel[0] ||
      recurrent_kernel[0] < 1)
    return "`recurrent_kernel` must have shape (units, 3*units) with units >= 1, got " +
           shape_str(recurrent_kernel);
  const int64_t units = recurrent_kernel[0];
  int64_t width = 3 * units;
  if (kernel) {
    if (kernel->size() != 2 || (*kernel)[1] != 3 * units || (*kernel)[0] < 1)
      return "`kernel` must have shape (input_width, 3*units) = (input_width, " +
             std::to_string(3 * units) + ") with input_width >= 1 for recurrent_kernel " +
             shape_str(recurrent_kernel) + ", got " + shape_str(*kernel);
    width = (*kernel)[0];
    if (inputs.size() != 3 || inputs[2] != width)
      return "`inputs` must have shape (batch, timesteps, input_width) = (batch, timesteps, " +
             std::to_string(width) + ") for kernel " + shape_str(*kernel) + ", got " +
             shape_str(inputs);
    if (!input_bias) return "`input_bias` is required with `kernel`";
    std::string err = check_same_shape("input_bias", *input_bias, {3 * units});
    if (!err.empty()) return err;
  } else if (inputs.size() != 3 || inputs[2] != 3 * units) {
    return "`inputs` (the projections xw, no `kernel` given) must have shape (batch, "
           "timesteps, 3*units) = (batch, timesteps, " +
           std::to_string(3 * units) + ") for recurrent_kernel " +
           shape_str(recurrent_kernel) + ", got " + shape_str(inputs);
  }
  const int64_t batch = inputs[0], time = inputs[1];
  std::string err = check_same_shape("h0", h0, {batch, units});
  if (err.empty()) err = check_same_shape("recurrent_bias", recurrent_bias, {3 * units});
  if (err.empty() && mask) err = check_same_shape("mask", *mask, {batch, time});
  if (err.empty() && dims) *dims = {batch, time, units, kernel ? width : 0};
  return err;
}

bool is_none_vector(const Shape& s) { return s == Shape{0}; }

bool is_absent(const Shape& s) {
  if (s.empty()) return false;  // a scalar is not "none"
  for (int64_t d : s)
    if (d != 0) return false;
  return true;
}

std::string check_forward_op(const ForwardOpShapes& s, SequenceDims* dims, bool* has_mask,
                             bool* projects) {
  *projects = !is_none_vector(s.kernel);
  if (!*projects && !is_none_vector(s.input_bias))
    return "`input_bias` must have shape (0,) without `kernel` (add it to xw), got " +
           shape_str(s.input_bias);
  *has_mask = !is_none_vector(s.mask);
  return check_forward_shapes(s.inputs, s.h0, s.recurrent_kernel, s.recurrent_bias,
                              *has_mask ? &s.mask : nullptr, dims,
                              *projects ? &s.kernel : nullptr, &s.input_bias);
}

std::string check_backward_op(const BackwardOpShapes& s, bool reset_after, SequenceDims* dims,
                              bool* has_mask) {
  if (s.h_seq.size() != 3 || s.h_seq[2] < 1)
    return "`h_seq` must have shape (batch, timesteps, units) with units >= 1, got " +
           shape_str(s.h_seq);
  if (s.recurrent_kernel.size() != 2)
    return "`recurrent_kernel` must have rank 2, got " + shape_str(s.recurrent_kernel);
  *dims = {s.h_seq[0], s.h_seq[1], s.h_seq[2]};
  const Shape seq{dims->batch, dims->time, dims->units};
  const Shape state{dims->batch, dims->units};
  std::string err = check_same_shape("recurrent_kernel", s.recurrent_kernel,
                                     {dims->units, 3 * dims->units});
  if (err.empty()) err = check_same_shape("h0", s.h0, state);
  *has_mask = !is_none_vector(s.mask);
  if (err.empty() && *has_mask) err = check_same_shape("mask", s.mask, {dims->batch, dims->time});
  const struct {
    const char* name;
    const Shape& shape;
    bool optional;
    Shape expected;
  } rules[] = {
      {"update", s.update, false, seq},
      {"reset", s.reset, false, seq},
      {"candidate", s.candidate, false, seq},
      {"hu_candidate", s.hu_candidate, !reset_after, seq},
      {"d_h_seq", s.d_h_seq, false, seq},
      {"d_h_last", s.d_h_last, false, state},
      {"d_update", s.d_update, true, seq},
      {"d_reset", s.d_reset, true, seq},
      {"d_candidate", s.d_candidate, true, seq},
  };
  for (const auto& rule : rules) {
    if (!err.empty()) break;
    if (rule.optional && is_absent(rule.shape)) continue;
    err = check_same_shape(rule.name, rule.shape, rule.expected);
  }
  return err;
}

}  // namespace gategru
