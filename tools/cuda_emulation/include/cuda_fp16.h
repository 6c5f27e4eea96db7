// Fake cuda_fp16.h for tools/cuda_emulation: IEEE half through GCC's _Float16.
#pragma once
#include <cstring>

struct __half {
  unsigned short x;
};
inline __half __ushort_as_half(unsigned short b) { return {b}; }
inline unsigned short __half_as_ushort(__half h) { return h.x; }
inline float __half2float(__half h) {
  _Float16 f;
  std::memcpy(&f, &h.x, 2);
  return static_cast<float>(f);
}
inline __half __float2half_rn(float v) {
  const _Float16 f = static_cast<_Float16>(v);  // round to nearest even
  __half h;
  std::memcpy(&h.x, &f, 2);
  return h;
}
