// CPU backward for one instruction set (included by the gru_cpu_<isa>.cc files), in
// reverse time. Per chunk of (rows, block of units), a stage first completes dL/dh_t for
// its units with dpre_{t+1}·Uᵀ (which needs every unit of step t+1: hence the barrier),
// then does step t's pointwise gradients for those units. reset_after=false needs one more
// stage per step for dL/d(r⊙h_prev) = da_h·U_hᵀ. Weight gradients are not accumulated
// here: the caller forms them with large matmuls over all steps.
#pragma once
#include "cpu_workspace.h"
#include "gru_params.h"
#include "panel_product.h"
#include "parallel.h"
#include "sequence_layout.h"

namespace gategru {
namespace {  // internal linkage: see gate_math.h

// A unit block is NV vectors of W lanes (BW units); R rows × NV accumulators per block.
template <typename T, int W, int R, int NV = 1>
struct BackwardKernel {
  using S = Simd<T, W>;
  using V = typename S::V;
  static constexpr int BW = NV * W;
  static_assert(32 % BW == 0, "gru_cpu.cc pads the packed panels to a multiple of 32 units");

  const GruBackwardParams<T>& p;
  const CpuWorkspace<T>& ws;
  SequenceLayout<T> seq;
  Blocking blk;
  int64_t H;
  bool in_place;

  BackwardKernel(const GruBackwardParams<T>& params, const CpuWorkspace<T>& w, int workers)
      : p(params),
        ws(w),
        seq{p.batch, p.time, p.units, p.mask, p.h0, p.h_seq, w.first_valid},
        blk(choose_blocking(p.batch, p.units, BW, R, workers)),
        H(p.units),
        in_place(H % BW == 0 && p.time * blk.row_groups <= kMaxInPlaceReads) {}

  // A call that would read each block of the transposed panels at most this often reads
  // U's rows where they are instead: the transpose writes all of U and reads it back, and
  // cost 20 times the product at one step (B = 1, H = 1024: 2.06 against 0.10 ms).
  static constexpr int64_t kMaxInPlaceReads = 2;

  int64_t phases() const { return p.reset_after ? 1 : 2; }
  const T* panel(int64_t ub) const { return ws.panels + ub * 3 * H * BW; }
  // f(v, j0, w) for each vector v of block ub that holds units: units j0 .. j0 + w.
  template <typename F>
  void for_vectors(int64_t ub, F&& f) const {
    for (int v = 0; v < NV; ++v) {
      const int64_t j0 = ub * BW + v * W;
      if (j0 >= H) return;
      f(v, j0, min64(W, H - j0));
    }
  }
  T* g_state(int64_t b) const { return ws.rows_a + b * H; }
  T* g_carry(int64_t b) const { return ws.rows_b + b * H; }
  // The caller's d_hu, else scratch where step parity picks the buffer: a stage writes step
  // t's while others read step t+1's.
  T* dhu_row(int64_t t, int64_t b) const {
    if (p.d_hu) return p.d_hu + seq.row(b, t) * 3 * H;
    return ws.dhu + ((t & 1) * p.batch + b) * 3 * H;
  }
  V opt(const T* base, int64_t off, int64_t w) const {
    return base ? load_n<S>(base + off, w) : V{};
  }

  // acc[m][v] = Σ_i a_m[i]·U[unit, i] over i in [k0, k1), for the block's vectors of units:
  // from the transposed panels, or U's rows in place, each unit a dot product along its
  // row (NU units at a time, so that NU·Rows FMA chains run).
  template <int Rows>
  void block_product(const T* const* a, int64_t k0, int64_t k1, int64_t ub,
                     V (&acc)[Rows][NV]) const {
    if (!in_place) return panel_product<Rows, NV, S>(a, k0, k1, panel(ub), BW, acc);
    constexpr int kChainUnits = Rows >= kFmaChains ? 1 : kFmaChains / Rows;
    constexpr int NU = kChainUnits < BW ? kChainUnits : BW;  // both powers of 2
    static_assert(BW % NU == 0, "in place, blocks are whole");
    T dots[Rows][BW];
    for (int64_t j = 0; j < BW; j += NU) {
      const T* u[NU];
      for (int q = 0; q < NU; ++q) u[q] = p.recurrent_kernel + (ub * BW + j + q) * 3 * H;
      V sums[Rows][NU] = {};
      for (int64_t i = k0; i < k1; i += W)
        for (int q = 0; q < NU; ++q) {
          const V uq = S::load(u[q] + i);
          for (int m = 0; m < Rows; ++m) sums[m][q] += S::load(a[m] + i) * uq;
        }
      for (int m = 0; m < Rows; ++m)
        for (int q = 0; q < NU; ++q) dots[m][j + q] = lane_sum(sums[m][q]);
    }
    for (int m = 0; m < Rows; ++m)
      for (int v = 0; v < NV; ++v) acc[m][v] = S::load(dots[m] + v * W);
  }

  static T lane_sum(V v) {
    T lanes[W];
    std::memcpy(lanes, &v, sizeof(V));
    T total = 0;
    for (int l = 0; l < W; ++l) total += lanes[l];
    return total;
  }

  // g_state[b, block] += Σ_i a_b[i]·U[unit, i] over i in [k0, k1); a masked step's rows
  // of `a` are zero, so they add nothing.
  template <int Rows>
  void add_product(const T* const* a, int64_t k0, int64_t k1, int64_t b0, int64_t ub) const {
    V acc[Rows][NV];
    block_product<Rows>(a, k0, k1, ub, acc);
    for_vectors(ub, [&](int v, int64_t j0, int64_t w) {
      for (int m = 0; m < Rows; ++m) {
        T* g = g_state(b0 + m) + j0;
        store_n<S>(g, load_n<S>(g, w) + acc[m][v], w);
      }
    });
  }

  // Step t's pointwise gradients for one row and block of units.
  void pointwise(int64_t t, int64_t b, int64_t j0, int64_t w) const {
    const int64_t row = seq.row(b, t), off = row * H + j0;
    T* g = g_state(b) + j0;
    T* carry = g_carry(b) + j0;
    T* dx = p.d_xw + row * 3 * H + j0;
    const V d_out = load_n<S>(p.d_h_seq + off, w);
    if (!seq.valid(b, t)) {
      // The state passes through; the output repeated h_seq[t-1] (or a constant 0).
      const V c = seq.carried_output(b, t) ? load_n<S>(carry, w) + d_out : V{};
      store_n<S>(carry, c, w);
      for (int gate = 0; gate < 3; ++gate) {
        store_n<S>(dx + gate * H, V{}, w);
        if (p.reset_after) store_n<S>(dhu_row(t, b) + gate * H + j0, V{}, w);
      }
      return;
    }
    const V dh = load_n<S>(g, w) + d_out + load_n<S>(carry, w);
    store_n<S>(carry, V{}, w);
    const V z = load_n<S>(p.update + off, w), hc = load_n<S>(p.candidate + off, w);
    const V hp = load_n<S>(seq.h_prev(b, t) + j0, w);
    StepGrads<V> s;
    if (p.reset_after) {
      const V r = load_n<S>(p.reset + off, w);
      s = step_grads_reset_after(dh, opt(p.d_update, off, w), opt(p.d_reset, off, w),
                                 opt(p.d_candidate, off, w), z, r, hc, hp,
                                 load_n<S>(p.hu_candidate + off, w));
      T* d = dhu_row(t, b) + j0;
      store_n<S>(d, s.da_z, w);
      store_n<S>(d + H, s.da_r, w);
      store_n<S>(d + 2 * H, s.da_h * r, w);
      store_n<S>(dx + H, s.da_r, w);
    } else {
      s = step_grads_reset_before(dh, opt(p.d_update, off, w), opt(p.d_candidate, off, w), z,
                                  hc, hp);
    }
    store_n<S>(dx, s.da_z, w);
    store_n<S>(dx + 2 * H, s.da_h, w);
    store_n<S>(g, s.dh_prev, w);
  }

  // reset_after=false: the reset gate's gradient from d(r⊙h_prev) = da_h·U_hᵀ.
  template <int Rows>
  void rows_reset_gate(int64_t t, int64_t b0, int64_t ub) const {
    const T* a[Rows];
    for (int m = 0; m < Rows; ++m) a[m] = p.d_xw + seq.row(b0 + m, t) * 3 * H;
    V acc[Rows][NV];
    block_product<Rows>(a, 2 * H, 3 * H, ub, acc);
    for_vectors(ub, [&](int v, int64_t j0, int64_t w) {
      for (int m = 0; m < Rows; ++m) reset_gate(t, b0 + m, j0, w, acc[m][v]);
    });
  }

  void reset_gate(int64_t t, int64_t b, int64_t j0, int64_t w, V drh) const {
    if (!seq.valid(b, t)) return;
    const int64_t off = seq.row(b, t) * H + j0;
    const V r = load_n<S>(p.reset + off, w);
    const V hp = load_n<S>(seq.h_prev(b, t) + j0, w);
    store_n<S>(p.d_xw + seq.row(b, t) * 3 * H + H + j0,
               reset_grad_reset_before(drh, opt(p.d_reset, off, w), r, hp), w);
    T* g = g_state(b) + j0;
    store_n<S>(g, load_n<S>(g, w) + drh * r, w);
  }

  // Phase 0 of reverse step t: finish dL/dh_t with step t+1's product, then step t's
  // pointwise part. Stage count is T·phases + 1: the last folds step 0 into dL/dh0.
  template <int Rows>
  void rows_main(int64_t t, int64_t b0, int64_t ub) const {
    if (t + 1 < p.time) {
      const T* a[Rows];
      for (int m = 0; m < Rows; ++m)
        a[m] = p.reset_after ? dhu_row(t + 1, b0 + m) : p.d_xw + seq.row(b0 + m, t + 1) * 3 * H;
      add_product<Rows>(a, 0, p.reset_after ? 3 * H : 2 * H, b0, ub);
    }
    if (t < 0) return;
    for_vectors(ub, [&](int, int64_t j0, int64_t w) {
      for (int m = 0; m < Rows; ++m) pointwise(t, b0 + m, j0, w);
    });
  }

  void run_chunk(int64_t stage, int64_t chunk) const {
    const int64_t t = p.time - 1 - stage / phases(), phase = stage % phases();
    const int64_t ub = blk.unit_block(chunk), rc = blk.row_chunk(chunk);
    const int64_t g1 = min64(blk.row_groups, (rc + 1) * blk.groups_per_chunk);
    for (int64_t g = rc * blk.groups_per_chunk; g < g1; ++g) {
      const int64_t b0 = g * R;
      with_rows<R>(min64(R, p.batch - b0), [&](auto rows) {
        constexpr int n = decltype(rows)::value;
        if (phase == 0) {
          rows_main<n>(t, b0, ub);
        } else {
          rows_reset_gate<n>(t, b0, ub);
        }
      });
    }
  }

  void run(const Workers& workers) const {
    if (!in_place) pack_backward_panels<BW>(p.recurrent_kernel, H, ws.panels);
    const int64_t n = p.batch * H;
    for (int64_t i = 0; i < n; ++i) {
      ws.rows_a[i] = p.d_h_last ? p.d_h_last[i] : T(0);
      ws.rows_b[i] = T(0);
    }
    const int64_t stages = p.time * phases() + 1;
    run_staged(workers, stages, blk.chunks(), [this](int64_t s, int64_t c) { run_chunk(s, c); });
    for (int64_t i = 0; i < n; ++i) p.d_h0[i] = ws.rows_a[i];
  }
};

}  // namespace
}  // namespace gategru
