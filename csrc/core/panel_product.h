// The CPU kernels' inner product: rows of activations times a packed panel of the
// recurrent kernel, accumulated in vector registers (a small register-blocked GEMM).
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "simd.h"

namespace gategru {
namespace {  // internal linkage: see gate_math.h

// Copies n ≤ W of `src` to dst and zero-fills dst up to W: one row of a block's panel.
template <int W, typename T>
inline void copy_padded(const T* src, int64_t n, T* dst) {
  if (n == W) {
    std::memcpy(dst, src, W * sizeof(T));  // a fixed size: a few vector moves, no call
    return;
  }
  for (int64_t j = 0; j < W; ++j) dst[j] = j < n ? src[j] : T(0);
}

// Forward panels of a (K, 3H) kernel (recurrent: K = H; input: K = I): for each block of W
// units, K rows of [z | r | h] × W columns, so one step's product for a block streams
// through memory once. Padded columns are 0. With candidate_apart, a block is K rows of
// [z | r], then K rows of h: for reset_after=false, whose candidate product is a stage of
// its own and would otherwise read one vector in three (AVX2: a cache line per 4 FMAs).
template <int W, typename T>
void pack_forward_panels(const T* kernel, int64_t K, int64_t H, T* panels,
                         bool candidate_apart = false) {
  const int64_t blocks = (H + W - 1) / W;
  for (int64_t ub = 0; ub < blocks; ++ub) {
    T* block = panels + ub * K * 3 * W;
    const int64_t j0 = ub * W, n = H - j0 < W ? H - j0 : W;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t g = 0; g < 3; ++g) {
        T* dst = !candidate_apart ? block + (k * 3 + g) * W
                 : g < 2          ? block + (k * 2 + g) * W
                                  : block + (2 * K + k) * W;
        copy_padded<W>(kernel + k * 3 * H + g * H + j0, n, dst);
      }
  }
}

// Backward panels: Uᵀ by blocks of W output units: 3H rows × W columns. A transpose, done
// in tiles of W × 16 so that the reads of U's rows and the writes of the panel both stay
// within a few cache lines (a plain loop took about 1 ms per call at H = 512).
template <int W, typename T>
void pack_backward_panels(const T* U, int64_t H, T* panels) {
  constexpr int64_t kTile = 16;
  const int64_t blocks = (H + W - 1) / W, K = 3 * H;
  for (int64_t ub = 0; ub < blocks; ++ub) {
    T* block = panels + ub * K * W;
    const int64_t j0 = ub * W, n = H - j0 < W ? H - j0 : W;
    for (int64_t i0 = 0; i0 < K; i0 += kTile) {
      const int64_t i1 = i0 + kTile < K ? i0 + kTile : K;
      for (int64_t j = 0; j < n; ++j) {
        const T* src = U + (j0 + j) * K;
        for (int64_t i = i0; i < i1; ++i) block[i * W + j] = src[i];
      }
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = n; j < W; ++j) block[i * W + j] = T(0);
    }
  }
}

// acc[m][v] = Σ_k a[m][k] · panel[k·stride + v·v_stride .. + W) for k in [k0, k1). A packed
// panel has its vectors side by side (v_stride = W); a kernel read in place has them a
// gate's width apart.
template <int R, int NV, typename S, typename T>
inline void panel_product(const T* const* a, int64_t k0, int64_t k1, const T* panel,
                          int64_t stride, typename S::V (&acc)[R][NV],
                          int64_t v_stride = S::width) {
  using V = typename S::V;
  for (int m = 0; m < R; ++m)
    for (int v = 0; v < NV; ++v) acc[m][v] = V{};
  for (int64_t k = k0; k < k1; ++k) {
    const T* p = panel + k * stride;
    V u[NV];
    for (int v = 0; v < NV; ++v) u[v] = S::load(p + v * v_stride);
    for (int m = 0; m < R; ++m) {
      const V am = S::bcast(a[m][k]);
      for (int v = 0; v < NV; ++v) acc[m][v] += am * u[v];
    }
  }
}

// out[m][c] = Σ_k a[m][k] · w[k·ld + c] for c in [c0, c1) (whole vectors), k in [0, K).
// For calls of a few rows, where the product is the time it takes to read the weights:
// it reads them row by row, front to back, four rows at a time, and keeps its sums in
// `out` (L1). A unit block's columns read in place (panel_product) are a few 64-byte
// pieces of every row, which the prefetchers do not follow: one core, K = 1024,
// 3H = 3072, L3-resident, one row of a: 1.1 ms that way, 0.20 ms this way.
template <int R, typename S, typename T>
void row_stream_product(const T* const* a, int64_t K, const T* w, int64_t ld, int64_t c0,
                        int64_t c1, T* const* out) {
  using V = typename S::V;
  constexpr int64_t kW = S::width;
  for (int m = 0; m < R; ++m)
    for (int64_t c = c0; c < c1; c += kW) S::store(out[m] + c, V{});
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    const T* w0 = w + k * ld;
    V am[R][4];
    for (int m = 0; m < R; ++m)
      for (int i = 0; i < 4; ++i) am[m][i] = S::bcast(a[m][k + i]);
    for (int64_t c = c0; c < c1; c += kW) {
      const V u0 = S::load(w0 + c), u1 = S::load(w0 + ld + c);
      const V u2 = S::load(w0 + 2 * ld + c), u3 = S::load(w0 + 3 * ld + c);
      for (int m = 0; m < R; ++m) {
        V acc = S::load(out[m] + c);
        acc += am[m][0] * u0;
        acc += am[m][1] * u1;
        acc += am[m][2] * u2;
        acc += am[m][3] * u3;
        S::store(out[m] + c, acc);
      }
    }
  }
  for (; k < K; ++k) {
    const T* wk = w + k * ld;
    for (int m = 0; m < R; ++m) {
      const V am = S::bcast(a[m][k]);
      for (int64_t c = c0; c < c1; c += kW) {
        const V acc = S::load(out[m] + c) + am * S::load(wk + c);
        S::store(out[m] + c, acc);
      }
    }
  }
}

// Independent FMA chains a product needs to keep two FMA pipes of 4 cycles' latency busy.
constexpr int kFmaChains = 8;

// acc[m][0] = Σ_k a[m][k] · panel[k·stride .. + W) for k in [0, K), one vector a row.
// Even and odd k go to separate accumulators, so R rows keep 2R FMA chains in flight, for
// row groups of fewer than kFmaChains rows (AVX2's have 4).
template <int R, typename S, typename T>
inline void panel_product_even_odd(const T* const* a, int64_t K, const T* panel,
                                   int64_t stride, typename S::V (&acc)[R][1]) {
  using V = typename S::V;
  V even[R], odd[R];
  for (int m = 0; m < R; ++m) even[m] = odd[m] = V{};
  int64_t k = 0;
  for (; k + 1 < K; k += 2) {
    const V u0 = S::load(panel + k * stride), u1 = S::load(panel + (k + 1) * stride);
    for (int m = 0; m < R; ++m) {
      even[m] += S::bcast(a[m][k]) * u0;
      odd[m] += S::bcast(a[m][k + 1]) * u1;
    }
  }
  if (k < K) {
    const V u = S::load(panel + k * stride);
    for (int m = 0; m < R; ++m) even[m] += S::bcast(a[m][k]) * u;
  }
  for (int m = 0; m < R; ++m) acc[m][0] = even[m] + odd[m];
}

// Calls f(std::integral_constant<int, r>) for the runtime row count r in [1, R]: row
// groups are R rows except the last one.
template <int R, typename F>
inline void with_rows(int64_t rows, F&& f) {
  if constexpr (R > 1) {
    if (rows < R) return with_rows<R - 1>(rows, f);
  }
  f(std::integral_constant<int, R>{});
}

// Partial vector loads and stores for the last, narrower unit block.
template <typename S, typename T>
inline typename S::V load_n(const T* p, int64_t n) {
  if (n == S::width) return S::load(p);
  typename S::V v{};
  std::memcpy(&v, p, n * sizeof(T));
  return v;
}

template <typename S, typename T>
inline void store_n(T* p, typename S::V v, int64_t n) {
  if (n == S::width) return S::store(p, v);
  std::memcpy(p, &v, n * sizeof(T));
}

}  // namespace
}  // namespace gategru
