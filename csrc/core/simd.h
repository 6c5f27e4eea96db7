// SIMD for the CPU kernels over GCC/Clang vector extensions. Each kernel translation unit
// is compiled for one instruction set (AVX-512, AVX2+FMA, or the baseline) and picks its
// vector width here, so one kernel source serves them all.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "gate_math.h"

#if defined(__AVX512F__)
#define GATEGRU_FLOAT_LANES 16
#elif defined(__AVX2__)
#define GATEGRU_FLOAT_LANES 8
#else
#define GATEGRU_FLOAT_LANES 4
#endif

namespace gategru {
// Internal linkage throughout: see gate_math.h.
namespace {

// Units are padded to this in every packed buffer, whatever the instruction set, so that
// buffer sizes do not depend on which kernel runs.
constexpr int64_t kUnitPad = 16;

template <typename T, int W>
struct Simd {
  using Scalar = T;
  using Lane = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  static constexpr int width = W;
  typedef T V __attribute__((vector_size(sizeof(T) * W)));
  static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  static void store(T* p, V v) { std::memcpy(p, &v, sizeof(V)); }
  // A store that bypasses the caches (no read of the line first, no eviction of what the
  // next step reads), for outputs nothing reads back soon. Falls back to store() when
  // unaligned. Callers fence() before anyone else reads the data.
  static void stream(T* p, V v) {
#if defined(__x86_64__)
    if (reinterpret_cast<uintptr_t>(p) % sizeof(V) == 0) {
      if constexpr (sizeof(V) == 64) {
#if defined(__AVX512F__)
        if constexpr (sizeof(T) == 4) return _mm512_stream_ps(p, (__m512)v);
        else return _mm512_stream_pd(p, (__m512d)v);
#endif
      } else if constexpr (sizeof(V) == 32) {
#if defined(__AVX__)
        if constexpr (sizeof(T) == 4) return _mm256_stream_ps(p, (__m256)v);
        else return _mm256_stream_pd(p, (__m256d)v);
#endif
      } else if constexpr (sizeof(V) == 16) {
        if constexpr (sizeof(T) == 4) return _mm_stream_ps(p, (__m128)v);
        else return _mm_stream_pd(p, (__m128d)v);
      }
    }
#endif
    store(p, v);
  }
  static void fence() {
#if defined(__x86_64__)
    _mm_sfence();
#endif
  }
  // A shuffle of lane 0, not V{} + x: that add of 0 cannot fold away (signed zeros).
  static V bcast(T x) {
    typedef Lane L __attribute__((vector_size(sizeof(Lane) * W)));
    const V v = {x};
    return __builtin_shuffle(v, L{});
  }
};

// Doubles keep full precision lane by lane; floats use a polynomial exp accurate to about
// one ulp, which keeps parity with TensorFlow's own float32 kernels well inside 1e-5.
template <typename V, int W>
V lanewise_exp(V x) {
  for (int i = 0; i < W; ++i) x[i] = std::exp(x[i]);
  return x;
}

template <typename V, typename I>
V poly_exp_float(V x) {
  // exp(x) = 2^n · exp(r), n = round(x / ln 2), |r| ≤ ln2 / 2. Comparisons are written so
  // that NaN fails them and passes through unchanged.
  x = x > 88.5f ? V{} + 88.5f : x;
  x = x < -88.0f ? V{} - 88.0f : x;
  const V magic = V{} + 12582912.0f;  // 1.5·2^23: adding it rounds to an integer
  const V n = (x * 1.44269504f + magic) - magic;
  const V r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // ln 2 split in two parts
  // Taylor series of exp(r) to r^7: truncation error < 1e-8 relative on |r| ≤ 0.35.
  V p = V{} + (1.0f / 5040);
  p = p * r + (1.0f / 720);
  p = p * r + (1.0f / 120);
  p = p * r + (1.0f / 24);
  p = p * r + (1.0f / 6);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(V));
  return p * scale;
}

template <int W>
struct FloatVectorMath {
  using V = typename Simd<float, W>::V;
  typedef int32_t I __attribute__((vector_size(sizeof(int32_t) * W)));
  static V exp(V x) { return poly_exp_float<V, I>(x); }
  // tanh(x) = sign(x)·(1 - 2/(exp(2|x|) + 1)): saturates to ±1, absolute error ~1e-7.
  static V tanh(V x) {
    const V a = x < 0 ? -x : x;
    const V t = 1 - 2 / (exp(2 * a) + 1);
    return x < 0 ? -t : (x == x ? t : x);
  }
};

template <int W>
struct DoubleVectorMath {
  using V = typename Simd<double, W>::V;
  static V exp(V x) { return lanewise_exp<V, W>(x); }
  static V tanh(V x) {
    for (int i = 0; i < W; ++i) x[i] = std::tanh(x[i]);
    return x;
  }
};

constexpr int kDoubleLanes = GATEGRU_FLOAT_LANES / 2;

template <>
struct MathFns<Simd<float, GATEGRU_FLOAT_LANES>::V> : FloatVectorMath<GATEGRU_FLOAT_LANES> {};
template <>
struct MathFns<Simd<double, kDoubleLanes>::V> : DoubleVectorMath<kDoubleLanes> {};
}  // namespace

}  // namespace gategru
