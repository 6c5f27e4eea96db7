// CPU backward, in reverse time. Per chunk of (rows, units), a stage first finishes
// dL/dh_t for its units with the product dpre_{t+1}·Uᵀ (which needs all units of step t+1,
// hence the stage barrier), then does step t's pointwise gradients for those units.
// reset_after=false needs one more stage per step: dL/d(r⊙h_prev) = da_h·U_hᵀ.
// Weight gradients are not accumulated here: the caller forms them with large matmuls.
#include <algorithm>
#include <vector>

#include "gate_math.h"
#include "gru_cpu.h"
#include "sequence_layout.h"

namespace gategru {
namespace {

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T s = T(0);
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

template <typename T>
T at_or_zero(const T* p, int64_t i) {
  return p ? p[i] : T(0);
}

template <typename T>
struct BackwardRun {
  const GruBackwardParams<T>& p;
  SequenceLayout<T> seq;
  Blocking blk;
  std::vector<T> g_state;  // (B,H) dL/dh for the state path, completed stage by stage
  std::vector<T> g_carry;  // (B,H) gradient of an output repeated by later masked steps
  // reset_after: gradient of h_prev·U + b, (2,B,3H) by step parity, so a stage writes
  // step t's while other chunks still read step t+1's.
  std::vector<T> dhu;

  BackwardRun(const GruBackwardParams<T>& params, int workers)
      : p(params),
        seq(p.batch, p.time, p.units, p.mask, p.h0, p.h_seq),
        blk(choose_blocking(p.batch, p.units, workers)),
        g_state(p.batch * p.units, T(0)),
        g_carry(p.batch * p.units, T(0)) {
    if (p.d_h_last) std::copy(p.d_h_last, p.d_h_last + p.batch * p.units, g_state.begin());
    if (p.reset_after) dhu.resize(2 * p.batch * 3 * p.units);
  }

  int64_t phases() const { return p.reset_after ? 1 : 2; }
  T* dhu_row(int64_t t, int64_t b) { return dhu.data() + ((t & 1) * p.batch + b) * 3 * p.units; }

  // Adds dL/dh_prev through U from the already complete step t (all units) to g_state.
  void add_recurrent_grad(int64_t t, int64_t b, int64_t j0, int64_t w) {
    if (!seq.valid(b, t)) return;  // a masked step's pre-activation gradients are zero
    const int64_t H = p.units;
    const T* U = p.recurrent_kernel;
    T* g = g_state.data() + b * H;
    if (p.reset_after) {
      const T* d = dhu_row(t, b);
      for (int64_t k = j0; k < j0 + w; ++k) g[k] += dot(d, U + k * 3 * H, 3 * H);
    } else {
      const T* d = p.d_xw + seq.row(b, t) * 3 * H;  // z and r blocks
      for (int64_t k = j0; k < j0 + w; ++k) g[k] += dot(d, U + k * 3 * H, 2 * H);
    }
  }

  // Pointwise gradients of step t for units [j0, j0+w) of row b.
  void pointwise(int64_t t, int64_t b, int64_t j0, int64_t w) {
    const int64_t H = p.units, row = seq.row(b, t), off = row * H;
    T* g = g_state.data() + b * H;
    T* carry = g_carry.data() + b * H;
    T* dx = p.d_xw + row * 3 * H;
    if (!seq.valid(b, t)) {
      // State carried: g_state passes through. The output repeated h_seq[t-1] (or 0).
      const bool repeats = seq.carried_output(b, t) != nullptr;
      for (int64_t j = j0; j < j0 + w; ++j) {
        carry[j] = repeats ? carry[j] + p.d_h_seq[off + j] : T(0);
        dx[j] = dx[H + j] = dx[2 * H + j] = T(0);
      }
      return;
    }
    const T* hp = seq.h_prev(b, t);
    for (int64_t j = j0; j < j0 + w; ++j) {
      const int64_t o = off + j;
      const T dh = g[j] + p.d_h_seq[o] + carry[j];
      carry[j] = T(0);
      StepGrads<T> s;
      if (p.reset_after) {
        s = step_grads_reset_after(dh, at_or_zero(p.d_update, o), at_or_zero(p.d_reset, o),
                                   at_or_zero(p.d_candidate, o), p.update[o], p.reset[o],
                                   p.candidate[o], hp[j], p.hu_candidate[o]);
        T* d = dhu_row(t, b);
        d[j] = s.da_z;
        d[H + j] = s.da_r;
        d[2 * H + j] = s.da_h * p.reset[o];
        dx[H + j] = s.da_r;
      } else {
        s = step_grads_reset_before(dh, at_or_zero(p.d_update, o), at_or_zero(p.d_candidate, o),
                                    p.update[o], p.candidate[o], hp[j]);
      }
      dx[j] = s.da_z;
      dx[2 * H + j] = s.da_h;
      g[j] = s.dh_prev;
    }
  }

  // reset_after=false: d(r⊙h_prev) = da_h·U_hᵀ gives the reset gate's gradient.
  void reset_phase(int64_t t, int64_t b, int64_t j0, int64_t w) {
    if (!seq.valid(b, t)) return;
    const int64_t H = p.units, row = seq.row(b, t), off = row * H;
    const T* hp = seq.h_prev(b, t);
    T* dx = p.d_xw + row * 3 * H;
    T* g = g_state.data() + b * H;
    for (int64_t k = j0; k < j0 + w; ++k) {
      const T drh = dot(dx + 2 * H, p.recurrent_kernel + k * 3 * H + 2 * H, H);
      const T r = p.reset[off + k];
      dx[H + k] = reset_grad_reset_before(drh, at_or_zero(p.d_reset, off + k), r, hp[k]);
      g[k] += drh * r;
    }
  }

  // Stage i handles reverse step t = T-1-(i / phases); a final stage folds step 0's
  // recurrent gradient into dL/dh0.
  void run_chunk(int64_t stage, int64_t chunk) {
    const int64_t t = p.time - 1 - stage / phases(), phase = stage % phases();
    const int64_t rb = chunk / blk.unit_blocks, ub = chunk % blk.unit_blocks;
    const int64_t j0 = ub * blk.unit_block, w = std::min(blk.unit_block, p.units - j0);
    const int64_t b1 = std::min(p.batch, (rb + 1) * blk.row_block);
    for (int64_t b = rb * blk.row_block; b < b1; ++b) {
      if (phase == 0) {
        if (t + 1 < p.time) add_recurrent_grad(t + 1, b, j0, w);
        if (t >= 0) pointwise(t, b, j0, w);
      } else {
        reset_phase(t, b, j0, w);
      }
    }
  }
};

}  // namespace

template <typename T>
void gru_backward_cpu(const GruBackwardParams<T>& p, const Workers& workers) {
  if (p.batch == 0 || p.units == 0) return;
  BackwardRun<T> run(p, workers.concurrency());
  const int64_t stages = p.time * run.phases() + 1;
  run_staged(workers, stages, run.blk.chunks(),
             [&run](int64_t s, int64_t c) { run.run_chunk(s, c); });
  std::copy(run.g_state.begin(), run.g_state.end(), p.d_h0);
}

template void gru_backward_cpu<float>(const GruBackwardParams<float>&, const Workers&);
template void gru_backward_cpu<double>(const GruBackwardParams<double>&, const Workers&);

}  // namespace gategru
