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

}  // namespace gategru
