// CPU forward: one stage per step (two with reset_after=false), each chunk computing the
// recurrent product for its rows and units and finishing their gates in the same pass.
#include <algorithm>
#include <vector>

#include "gate_math.h"
#include "gru_cpu.h"
#include "sequence_layout.h"

namespace gategru {
namespace {

// acc[g*w + j] += Σ_k h[k]·U[k, g*H + j0 + j] for the gate blocks g in [g0, g1).
template <typename T>
void recurrent_product(const T* h, const T* U, int64_t H, int64_t j0, int64_t w, int g0,
                       int g1, T* acc) {
  std::fill(acc, acc + (g1 - g0) * w, T(0));
  for (int64_t k = 0; k < H; ++k) {
    const T hk = h[k];
    const T* row = U + k * 3 * H + j0;
    for (int g = g0; g < g1; ++g) {
      T* a = acc + (g - g0) * w;
      const T* u = row + g * H;
      for (int64_t j = 0; j < w; ++j) a[j] += hk * u[j];
    }
  }
}

template <typename T>
struct ForwardRun {
  const GruForwardParams<T>& p;
  SequenceLayout<T> seq;
  Blocking blk;
  std::vector<T> z_tmp, rh_tmp;  // reset_after=false: z and r⊙h_prev between the phases

  ForwardRun(const GruForwardParams<T>& params, int workers)
      : p(params),
        seq(p.batch, p.time, p.units, p.mask, p.h0, p.h_seq),
        blk(choose_blocking(p.batch, p.units, workers)) {
    if (!p.reset_after) {
      z_tmp.resize(p.batch * p.units);
      rh_tmp.resize(p.batch * p.units);
    }
  }

  void write_gates(int64_t off, T z, T r, T hc) const {
    if (p.update) p.update[off] = z;
    if (p.reset) p.reset[off] = r;
    if (p.candidate) p.candidate[off] = hc;
  }

  // A masked step repeats the previous output, carries the state, and has zero gates.
  void masked_step(int64_t b, int64_t t, int64_t j0, int64_t w) const {
    const int64_t H = p.units, off = seq.row(b, t) * H + j0;
    const T* carried = seq.carried_output(b, t);
    for (int64_t j = 0; j < w; ++j) {
      p.h_seq[off + j] = carried ? carried[j0 + j] : T(0);
      write_gates(off + j, T(0), T(0), T(0));
      if (p.hu_candidate) p.hu_candidate[off + j] = T(0);
    }
  }

  void step_reset_after(int64_t t, int64_t b, int64_t j0, int64_t w) const {
    const int64_t H = p.units, off = seq.row(b, t) * H + j0;
    T acc[3 * kMaxUnitBlock];
    const T* hp = seq.h_prev(b, t);
    recurrent_product(hp, p.recurrent_kernel, H, j0, w, 0, 3, acc);
    const T* x = p.xw + seq.row(b, t) * 3 * H + j0;
    const T* bias = p.recurrent_bias + j0;
    for (int64_t j = 0; j < w; ++j) {
      const T uh = acc[2 * w + j] + bias[2 * H + j];
      const GateValues<T> g = gates_reset_after(x[j], x[H + j], x[2 * H + j],
                                                acc[j] + bias[j], acc[w + j] + bias[H + j], uh);
      p.h_seq[off + j] = mix_state(g.z, hp[j0 + j], g.hc);
      write_gates(off + j, g.z, g.r, g.hc);
      if (p.hu_candidate) p.hu_candidate[off + j] = uh;
    }
  }

  // reset_after=false, phase 1: z, r and r⊙h_prev for this block.
  void step_gates_zr(int64_t t, int64_t b, int64_t j0, int64_t w) {
    const int64_t H = p.units;
    T acc[2 * kMaxUnitBlock];
    const T* hp = seq.h_prev(b, t);
    recurrent_product(hp, p.recurrent_kernel, H, j0, w, 0, 2, acc);
    const T* x = p.xw + seq.row(b, t) * 3 * H + j0;
    const T* bias = p.recurrent_bias + j0;
    for (int64_t j = 0; j < w; ++j) {
      const T z = sigmoid(x[j] + acc[j] + bias[j]);
      const T r = sigmoid(x[H + j] + acc[w + j] + bias[H + j]);
      z_tmp[b * H + j0 + j] = z;
      rh_tmp[b * H + j0 + j] = r * hp[j0 + j];
      if (p.reset) p.reset[seq.row(b, t) * H + j0 + j] = r;
    }
  }

  // reset_after=false, phase 2: h̃ = tanh(x_h + (r⊙h_prev)·U_h + b_h) and the new state.
  void step_candidate(int64_t t, int64_t b, int64_t j0, int64_t w) const {
    const int64_t H = p.units, off = seq.row(b, t) * H + j0;
    T acc[kMaxUnitBlock];
    recurrent_product(rh_tmp.data() + b * H, p.recurrent_kernel, H, j0, w, 2, 3, acc);
    const T* x = p.xw + seq.row(b, t) * 3 * H + j0;
    const T* hp = seq.h_prev(b, t);
    for (int64_t j = 0; j < w; ++j) {
      const T z = z_tmp[b * H + j0 + j];
      const T hc = tanh_act(x[2 * H + j] + acc[j] + p.recurrent_bias[2 * H + j0 + j]);
      p.h_seq[off + j] = mix_state(z, hp[j0 + j], hc);
      if (p.update) p.update[off + j] = z;
      if (p.candidate) p.candidate[off + j] = hc;
    }
  }

  void run_chunk(int64_t stage, int64_t chunk) {
    const int64_t phases = p.reset_after ? 1 : 2;
    const int64_t t = stage / phases, phase = stage % phases;
    const int64_t rb = chunk / blk.unit_blocks, ub = chunk % blk.unit_blocks;
    const int64_t j0 = ub * blk.unit_block, w = std::min(blk.unit_block, p.units - j0);
    const int64_t b1 = std::min(p.batch, (rb + 1) * blk.row_block);
    for (int64_t b = rb * blk.row_block; b < b1; ++b) {
      if (!seq.valid(b, t)) {
        if (phase == phases - 1) masked_step(b, t, j0, w);
      } else if (p.reset_after) {
        step_reset_after(t, b, j0, w);
      } else if (phase == 0) {
        step_gates_zr(t, b, j0, w);
      } else {
        step_candidate(t, b, j0, w);
      }
    }
  }

  void write_last_state() const {
    const int64_t H = p.units;
    for (int64_t b = 0; b < p.batch; ++b) {
      const bool any_valid = seq.first_valid[b] < p.time;
      const T* src = any_valid ? p.h_seq + (seq.row(b, p.time - 1)) * H : p.h0 + b * H;
      std::copy(src, src + H, p.h_last + b * H);
    }
  }
};

}  // namespace

template <typename T>
void gru_forward_cpu(const GruForwardParams<T>& p, const Workers& workers) {
  if (p.batch == 0 || p.units == 0) return;
  ForwardRun<T> run(p, workers.concurrency());
  const int64_t stages = p.time * (p.reset_after ? 1 : 2);
  run_staged(workers, stages, run.blk.chunks(),
             [&run](int64_t s, int64_t c) { run.run_chunk(s, c); });
  run.write_last_state();
}

template void gru_forward_cpu<float>(const GruForwardParams<float>&, const Workers&);
template void gru_forward_cpu<double>(const GruForwardParams<double>&, const Workers&);

}  // namespace gategru
