// CPU forward for one instruction set (included by the gru_cpu_<isa>.cc files).
// One stage per step (two with reset_after=false); a chunk computes the recurrent product
// for its rows and block of units in registers, then finishes their gates in the same
// pass and writes h, z, r, h̃ straight to the outputs. Given the input kernel, a chunk
// first projects its rows of x for its units, so no (B,T,3H) projection is ever stored.
#pragma once
#include "cpu_workspace.h"
#include "gru_params.h"
#include "panel_product.h"
#include "parallel.h"
#include "sequence_layout.h"

namespace gategru {
namespace {  // internal linkage: see gate_math.h

template <typename T, int W, int R>
struct ForwardKernel {
  using S = Simd<T, W>;
  using V = typename S::V;

  const GruForwardParams<T>& p;
  const CpuWorkspace<T>& ws;
  SequenceLayout<T> seq;
  Blocking blk;
  int64_t H;
  bool streaming;
  bool in_place;
  bool stream_rows;
  int64_t parts;

  ForwardKernel(const GruForwardParams<T>& params, const CpuWorkspace<T>& w, int workers)
      : p(params),
        ws(w),
        seq{p.batch, p.time, p.units, p.mask, p.h0, p.h_seq, w.first_valid},
        blk(choose_blocking(p.batch, p.units, W, R, workers)),
        H(p.units),
        streaming(stream_gates()),
        in_place(read_in_place()),
        stream_rows(in_place && rows_streamable()),
        parts(min64(workers, blk.chunks())) {}

  const T* panel(int64_t ub) const { return ws.panels + ub * H * 3 * W; }
  const T* input_panel(int64_t ub) const { return ws.input_panels + ub * p.input_width * 3 * W; }

  // Where a block's product finds its weights: k_stride between rows of K, v_stride
  // between its gates' vectors. Packed panels, or, where a call reads each panel at most
  // kMaxInPlaceReads times or streams its rows, the kernels themselves: packing a panel
  // writes it and reads it back, more traffic than those few reads (T = 1, H = 1024:
  // 2.3 ms a call, 90% packing).
  struct Weights {
    const T* base;
    int64_t k_stride, v_stride;
  };
  static constexpr int64_t kMaxInPlaceReads = 2;
  bool read_in_place() const {
    return H % W == 0 && (p.time * blk.row_groups <= kMaxInPlaceReads || rows_streamable());
  }
  // Row by row won or tied against packing, or reading in place a unit block at a time,
  // for up to 4 rows and 16 rows × steps (the dispatcher has checked B·T) at every size
  // measured. For 5-8 rows (measured at one step) only where the unit-block reads go
  // badly: kernel rows a multiple of 4 KB apart, all in one L1 set (H = 1024: 8 rows 1.55
  // against 1.03 ms), or two row groups (AVX2) over kernels that outgrow L2
  // (docs/cpu_performance.md).
  static constexpr int64_t kStreamedRows = 4;
  static constexpr int64_t kStreamedWeightBytes = int64_t{4} << 20;
  bool rows_streamable() const {
    if (!ws.products) return false;
    if (p.batch <= kStreamedRows) return true;
    if (p.time > 1 || p.batch > 2 * kStreamedRows) return false;
    const bool rows_in_one_set = 3 * H * int64_t{sizeof(T)} % 4096 == 0;
    const int64_t weights = 3 * H * (H + (p.kernel ? p.input_width : 0)) * int64_t{sizeof(T)};
    return rows_in_one_set || (blk.row_groups > 1 && weights >= kStreamedWeightBytes);
  }
  // z and r, and with reset_after h̃ too.
  Weights recurrent(int64_t ub) const {
    if (in_place) return {p.recurrent_kernel + ub * W, 3 * H, H};
    return {panel(ub), p.reset_after ? 3 * W : 2 * W, W};
  }
  // reset_after=false's h̃, packed apart (pack_forward_panels).
  Weights candidate(int64_t ub) const {
    if (in_place) return {p.recurrent_kernel + 2 * H + ub * W, 3 * H, H};
    return {panel(ub) + 2 * H * W, W, W};
  }
  Weights input(int64_t ub) const {
    if (in_place) return {p.kernel + ub * W, 3 * H, H};
    return {input_panel(ub), 3 * W, W};
  }

  // The input pre-activations of z, r and h̃ for the rows' block of units: from xw, or
  // x·W + b_in computed here while the row of x is in cache.
  template <int Rows>
  void input_part(int64_t t, int64_t b0, int64_t ub, V (&in)[Rows][3]) const {
    const int64_t j0 = ub * W, w = min64(W, H - j0);
    if (!p.kernel) {
      for (int m = 0; m < Rows; ++m)
        for (int g = 0; g < 3; ++g)
          in[m][g] = load_n<S>(p.xw + seq.row(b0 + m, t) * 3 * H + g * H + j0, w);
      return;
    }
    if (stream_rows) {
      product_of<Rows, 3>(input_products(), b0, j0, in);
    } else {
      const T* x[Rows];
      for (int m = 0; m < Rows; ++m) x[m] = p.x + seq.row(b0 + m, t) * p.input_width;
      const Weights u = input(ub);
      panel_product<Rows, 3, S>(x, 0, p.input_width, u.base, u.k_stride, in, u.v_stride);
    }
    for (int g = 0; g < 3; ++g) {
      const V bias = load_n<S>(p.input_bias + g * H + j0, w);
      for (int m = 0; m < Rows; ++m) in[m][g] += bias;
    }
  }

  // Gates are written once and not read again by this op. Once a gate tensor outgrows
  // a last-level cache (32 MB), its writes go around the caches (no read of each line
  // first, no eviction of the states and weights the next step reads). Below that, plain
  // stores were as fast or faster: S2's 16 MB gates cost 10% streamed, 5% plain (AVX2:
  // 12% and 4%); docs/cpu_performance.md.
  bool stream_gates() const { return p.batch * p.time * H * int64_t{sizeof(T)} >= (32 << 20); }

  void store_opt(T* base, int64_t off, V v, int64_t w) const {
    if (!base) return;
    if (w == W && streaming) return S::stream(base + off, v);
    store_n<S>(base + off, v, w);
  }

  // A masked step repeats the previous output, carries the state, and has zero gates.
  void masked_step(int64_t b, int64_t t, int64_t j0, int64_t w) const {
    const int64_t off = seq.row(b, t) * H + j0;
    const T* carried = seq.carried_output(b, t);
    const V h = carried ? load_n<S>(carried + j0, w) : V{};
    store_n<S>(p.h_seq + off, h, w);
    for (T* gate : {p.update, p.reset, p.candidate, p.hu_candidate}) store_opt(gate, off, V{}, w);
  }

  template <int Rows>
  void previous_states(int64_t t, int64_t b0, const T* (&hp)[Rows]) const {
    for (int m = 0; m < Rows; ++m) hp[m] = seq.h_prev(b0 + m, t);
  }

  template <int Rows>
  void rows_reset_after(int64_t t, int64_t b0, int64_t ub) const {
    V in[Rows][3];
    input_part<Rows>(t, b0, ub, in);
    const T* hp[Rows];
    previous_states<Rows>(t, b0, hp);
    V acc[Rows][3];
    const int64_t j0 = ub * W, w = min64(W, H - j0);
    if (stream_rows) {
      product_of<Rows, 3>(recurrent_products(), b0, j0, acc);
    } else {
      const Weights u = recurrent(ub);
      panel_product<Rows, 3, S>(hp, 0, H, u.base, u.k_stride, acc, u.v_stride);
    }
    const T* bias = p.recurrent_bias + j0;
    const V bz = load_n<S>(bias, w), br = load_n<S>(bias + H, w), bh = load_n<S>(bias + 2 * H, w);
    for (int m = 0; m < Rows; ++m) {
      const int64_t b = b0 + m;
      if (!seq.valid(b, t)) {
        masked_step(b, t, j0, w);
        continue;
      }
      const V uh = acc[m][2] + bh;
      const GateValues<V> g =
          gates_reset_after(in[m][0], in[m][1], in[m][2], acc[m][0] + bz, acc[m][1] + br, uh);
      const int64_t off = seq.row(b, t) * H + j0;
      store_n<S>(p.h_seq + off, mix_state(g.z, load_n<S>(hp[m] + j0, w), g.hc), w);
      store_opt(p.update, off, g.z, w);
      store_opt(p.reset, off, g.r, w);
      store_opt(p.candidate, off, g.hc, w);
      store_opt(p.hu_candidate, off, uh, w);
    }
  }

  // reset_after=false, phase 1: z (kept in ws.rows_a), r and r⊙h_prev (ws.rows_b), and
  // h̃'s input part (ws.rows_c), projected here with z's and r's: three vectors a row keep
  // more FMA chains going than the candidate's one would in phase 2.
  template <int Rows>
  void rows_update_reset(int64_t t, int64_t b0, int64_t ub) const {
    V in[Rows][3];
    input_part<Rows>(t, b0, ub, in);
    const T* hp[Rows];
    previous_states<Rows>(t, b0, hp);
    V acc[Rows][2];
    const int64_t j0 = ub * W, w = min64(W, H - j0);
    if (stream_rows) {
      product_of<Rows, 2>(recurrent_products(), b0, j0, acc);
    } else {
      const Weights u = recurrent(ub);
      panel_product<Rows, 2, S>(hp, 0, H, u.base, u.k_stride, acc, u.v_stride);
    }
    const T* bias = p.recurrent_bias + j0;
    const V bz = load_n<S>(bias, w), br = load_n<S>(bias + H, w);
    for (int m = 0; m < Rows; ++m) {
      const int64_t b = b0 + m;
      if (!seq.valid(b, t)) continue;
      const V z = sigmoid(in[m][0] + acc[m][0] + bz);
      const V r = sigmoid(in[m][1] + acc[m][1] + br);
      store_n<S>(ws.rows_a + b * H + j0, z, w);
      store_n<S>(ws.rows_b + b * H + j0, r * load_n<S>(hp[m] + j0, w), w);
      store_n<S>(ws.rows_c + b * H + j0, in[m][2], w);
      store_opt(p.reset, seq.row(b, t) * H + j0, r, w);
    }
  }

  // reset_after=false, phase 2: h̃ = tanh(x_h + (r⊙h_prev)·U_h + b_h), then the state.
  template <int Rows>
  void rows_candidate(int64_t t, int64_t b0, int64_t ub) const {
    const T* rh[Rows];
    for (int m = 0; m < Rows; ++m) rh[m] = ws.rows_b + (b0 + m) * H;
    V acc[Rows][1];
    const int64_t j0 = ub * W, w = min64(W, H - j0);
    const Weights u = candidate(ub);
    if (stream_rows) {
      product_of<Rows, 1>(recurrent_products() + 2 * H, b0, j0, acc);
    } else if constexpr (Rows < kFmaChains) {
      panel_product_even_odd<Rows, S>(rh, H, u.base, u.k_stride, acc);
    } else {
      panel_product<Rows, 1, S>(rh, 0, H, u.base, u.k_stride, acc);
    }
    const V bh = load_n<S>(p.recurrent_bias + 2 * H + j0, w);
    for (int m = 0; m < Rows; ++m) {
      const int64_t b = b0 + m;
      if (!seq.valid(b, t)) {
        masked_step(b, t, j0, w);
        continue;
      }
      const int64_t off = seq.row(b, t) * H + j0;
      const V hc = tanh_act(load_n<S>(ws.rows_c + b * H + j0, w) + acc[m][0] + bh);
      const V z = load_n<S>(ws.rows_a + b * H + j0, w);
      store_n<S>(p.h_seq + off, mix_state(z, load_n<S>(seq.h_prev(b, t) + j0, w), hc), w);
      store_opt(p.update, off, z, w);
      store_opt(p.candidate, off, hc, w);
    }
  }

  bool all_masked(int64_t t, int64_t b0, int64_t rows) const {
    for (int64_t b = b0; b < b0 + rows; ++b)
      if (seq.valid(b, t)) return false;
    return true;
  }

  // Calls of a few rows and steps (stream_rows) read the weights row by row: each step
  // (each phase with reset_after=false) is then two stages, the products of all rows
  // into ws.products, a slice of columns per part, then the gates as usual, which read
  // their products from there.
  T* input_products() const { return ws.products; }
  T* recurrent_products() const { return ws.products + p.batch * product_row<T>(H); }

  template <int Rows, int NV>
  void product_of(const T* products, int64_t b0, int64_t j0, V (&acc)[Rows][NV]) const {
    const int64_t row = product_row<T>(H);
    for (int m = 0; m < Rows; ++m)
      for (int v = 0; v < NV; ++v) acc[m][v] = S::load(products + (b0 + m) * row + v * H + j0);
  }

  // Part i runs as chunk chunks·i/parts, the first of worker i's share in run_staged, so
  // each worker reads its own slice of every row; any other chunk has nothing to do here.
  int64_t part_of(int64_t chunk) const {
    for (int64_t i = 0; i < parts; ++i)
      if (blk.chunks() * i / parts == chunk) return i;
    return -1;
  }

  // Columns [c0, c1) of n, whole vectors, for the given part.
  void slice(int64_t part, int64_t n, int64_t& c0, int64_t& c1) const {
    const int64_t vectors = n / W;
    c0 = vectors * part / parts * W;
    c1 = vectors * (part + 1) / parts * W;
  }

  void stream_products(int64_t t, int64_t phase, int64_t chunk) const {
    const int64_t part = part_of(chunk);
    if (part < 0) return;
    with_rows<2 * kStreamedRows>(p.batch, [&](auto rows) {  // see rows_streamable
      constexpr int n = decltype(rows)::value;
      const T* a[n];
      T* out[n];
      int64_t c0, c1;
      if (phase == 1) {  // reset_after=false's candidate: (r⊙h_prev)·U_h
        for (int m = 0; m < n; ++m) {
          a[m] = ws.rows_b + m * H;
          out[m] = recurrent_products() + m * product_row<T>(H) + 2 * H;
        }
        slice(part, H, c0, c1);
        return row_stream_product<n, S>(a, H, p.recurrent_kernel + 2 * H, 3 * H, c0, c1, out);
      }
      if (p.kernel) {
        for (int m = 0; m < n; ++m) {
          a[m] = p.x + seq.row(m, t) * p.input_width;
          out[m] = input_products() + m * product_row<T>(H);
        }
        slice(part, 3 * H, c0, c1);
        row_stream_product<n, S>(a, p.input_width, p.kernel, 3 * H, c0, c1, out);
      }
      for (int m = 0; m < n; ++m) {
        a[m] = seq.h_prev(m, t);
        out[m] = recurrent_products() + m * product_row<T>(H);
      }
      slice(part, p.reset_after ? 3 * H : 2 * H, c0, c1);
      row_stream_product<n, S>(a, H, p.recurrent_kernel, 3 * H, c0, c1, out);
    });
  }

  void run_chunk(int64_t stage, int64_t chunk) const {
    if (stream_rows) {
      if (stage % 2 == 0) return stream_products_of_stage(stage / 2, chunk);
      stage /= 2;
    }
    run_rows(stage, chunk);
    if (streaming) S::fence();  // the streamed gates, before the barrier
  }

  // Stages of a step: reset_after=false's candidate needs r⊙h_prev from a stage before.
  int64_t phases() const { return p.reset_after ? 1 : 2; }

  void stream_products_of_stage(int64_t stage, int64_t chunk) const {
    stream_products(stage / phases(), stage % phases(), chunk);
  }

  void run_rows(int64_t stage, int64_t chunk) const {
    const int64_t t = stage / phases(), phase = stage % phases();
    const int64_t ub = blk.unit_block(chunk), rc = blk.row_chunk(chunk);
    const int64_t g1 = min64(blk.row_groups, (rc + 1) * blk.groups_per_chunk);
    for (int64_t g = rc * blk.groups_per_chunk; g < g1; ++g) {
      const int64_t b0 = g * R;
      const int64_t rows_here = min64(R, p.batch - b0);
      if (all_masked(t, b0, rows_here)) {  // long masked stretches cost no products
        if (phase == phases() - 1) {
          const int64_t j0 = ub * W;
          for (int64_t b = b0; b < b0 + rows_here; ++b) masked_step(b, t, j0, min64(W, H - j0));
        }
        continue;
      }
      with_rows<R>(rows_here, [&](auto rows) {
        constexpr int n = decltype(rows)::value;
        if (p.reset_after) {
          rows_reset_after<n>(t, b0, ub);
        } else if (phase == 0) {
          rows_update_reset<n>(t, b0, ub);
        } else {
          rows_candidate<n>(t, b0, ub);
        }
      });
    }
  }

  void run(const Workers& workers) const {
    if (!in_place) {
      pack_forward_panels<W>(p.recurrent_kernel, H, H, ws.panels, !p.reset_after);
      if (p.kernel) pack_forward_panels<W>(p.kernel, p.input_width, H, ws.input_panels);
    }
    const int64_t stages = p.time * phases() * (stream_rows ? 2 : 1);
    run_staged(workers, stages, blk.chunks(), [this](int64_t s, int64_t c) { run_chunk(s, c); });
    for (int64_t b = 0; b < p.batch; ++b) {
      const bool any_valid = seq.first_valid[b] < p.time;
      const T* src = any_valid ? p.h_seq + seq.row(b, p.time - 1) * H : p.h0 + b * H;
      for (int64_t j = 0; j < H; ++j) p.h_last[b * H + j] = src[j];
    }
  }
};

}  // namespace
}  // namespace gategru
