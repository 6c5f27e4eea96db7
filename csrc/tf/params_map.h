// The kernels' params over another element type, pointer by pointer: TF's 16-bit types
// reinterpreted as the CUDA kernels' Half/BFloat16 (same bits), or widened to float copies
// for the CPU kernels. `in(ptr, n)` maps a read-only array of n elements, `out(ptr, n)` a
// written one; both pass null through.
#pragma once
#include <cstdint>

#include "../core/gru_params.h"

namespace gategru {

template <typename To, typename From, typename In, typename Out>
GruForwardParams<To> map_params(const GruForwardParams<From>& p, In in, Out out) {
  const int64_t B = p.batch, T = p.time, H = p.units, I = p.input_width;
  GruForwardParams<To> q;
  q.batch = B;
  q.time = T;
  q.units = H;
  q.reset_after = p.reset_after;
  q.input_width = I;
  q.mask = p.mask;
  q.xw = in(p.xw, B * T * 3 * H);
  q.x = in(p.x, B * T * I);
  q.kernel = in(p.kernel, I * 3 * H);
  q.input_bias = in(p.input_bias, 3 * H);
  q.h0 = in(p.h0, B * H);
  q.recurrent_kernel = in(p.recurrent_kernel, H * 3 * H);
  q.recurrent_bias = in(p.recurrent_bias, 3 * H);
  q.h_seq = out(p.h_seq, B * T * H);
  q.h_last = out(p.h_last, B * H);
  q.update = out(p.update, B * T * H);
  q.reset = out(p.reset, B * T * H);
  q.candidate = out(p.candidate, B * T * H);
  q.hu_candidate = out(p.hu_candidate, B * T * H);
  return q;
}

template <typename To, typename From, typename In, typename Out>
GruBackwardParams<To> map_params(const GruBackwardParams<From>& p, In in, Out out) {
  const int64_t B = p.batch, T = p.time, H = p.units, seq = B * T * H;
  GruBackwardParams<To> q;
  q.batch = B;
  q.time = T;
  q.units = H;
  q.reset_after = p.reset_after;
  q.mask = p.mask;
  q.h0 = in(p.h0, B * H);
  q.recurrent_kernel = in(p.recurrent_kernel, H * 3 * H);
  q.h_seq = in(p.h_seq, seq);
  q.update = in(p.update, seq);
  q.reset = in(p.reset, seq);
  q.candidate = in(p.candidate, seq);
  q.hu_candidate = in(p.hu_candidate, seq);
  q.d_h_seq = in(p.d_h_seq, seq);
  q.d_h_last = in(p.d_h_last, B * H);
  q.d_update = in(p.d_update, seq);
  q.d_reset = in(p.d_reset, seq);
  q.d_candidate = in(p.d_candidate, seq);
  q.d_xw = out(p.d_xw, 3 * seq);
  q.d_h0 = out(p.d_h0, B * H);
  q.d_hu = out(p.d_hu, 3 * seq);
  return q;
}

}  // namespace gategru
