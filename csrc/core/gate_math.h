// The GRU's pointwise math, written once for the CPU (scalar and SIMD) and CUDA paths.
// Gate order along the 3H axis is Keras's: z (update), r (reset), h (candidate).
// T is a scalar or a GCC/Clang vector type: literals are plain (1, not T(1)) so that
// both broadcast, and exp/tanh go through MathFns, which simd.h specializes.
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define GATEGRU_HD __host__ __device__ __forceinline__
#else
#define GATEGRU_HD inline
#endif

namespace gategru {
// Internal linkage: the CPU kernels are compiled once per instruction set, and each
// translation unit must keep its own copy rather than share one the linker picked.
namespace {

template <typename T>
struct MathFns {
  static GATEGRU_HD T exp(T x) {
    using std::exp;
    return exp(x);
  }
  static GATEGRU_HD T tanh(T x) {
    using std::tanh;
    return tanh(x);
  }
};

// exp(-x) overflows to inf for very negative x, giving exactly 0: saturates, never NaN.
template <typename T>
GATEGRU_HD T sigmoid(T x) {
  return 1 / (1 + MathFns<T>::exp(-x));
}

template <typename T>
GATEGRU_HD T tanh_act(T x) {
  return MathFns<T>::tanh(x);
}

template <typename T>
struct GateValues {
  T z, r, hc;
};

// New state from the gates: h = z·h_prev + (1 - z)·h̃.
template <typename T>
GATEGRU_HD T mix_state(T z, T h_prev, T hc) {
  return z * h_prev + (1 - z) * hc;
}

// reset_after=true: every pre-activation is known after one product h_prev·U.
//   x* = input projections, u* = recurrent projections incl. recurrent bias.
template <typename T>
GATEGRU_HD GateValues<T> gates_reset_after(T xz, T xr, T xh, T uz, T ur, T uh) {
  GateValues<T> g;
  g.z = sigmoid(xz + uz);
  g.r = sigmoid(xr + ur);
  g.hc = tanh_act(xh + g.r * uh);
  return g;
}

// Gradients of one unit's step. dh is the total gradient reaching h_t; d*_ext are
// gradients arriving directly on the gate outputs.
template <typename T>
struct StepGrads {
  T da_z, da_r, da_h;  // pre-activation gradients (= gradients of xw)
  T dh_prev;           // the part of dL/dh_prev that does not go through U
};

// reset_after=true: uh = h_prev·U_h + b_h (cached by forward).
template <typename T>
GATEGRU_HD StepGrads<T> step_grads_reset_after(T dh, T dz_ext, T dr_ext, T dhc_ext, T z, T r,
                                               T hc, T h_prev, T uh) {
  StepGrads<T> g;
  const T dz = dh * (h_prev - hc) + dz_ext;
  const T dhc = dh * (1 - z) + dhc_ext;
  g.da_h = dhc * (1 - hc * hc);
  const T dr = g.da_h * uh + dr_ext;
  g.da_z = dz * z * (1 - z);
  g.da_r = dr * r * (1 - r);
  g.dh_prev = dh * z;
  return g;
}

// reset_after=false, first half: everything but the reset gate, whose gradient needs
// d(r⊙h_prev) = da_h·U_hᵀ summed over all units first.
template <typename T>
GATEGRU_HD StepGrads<T> step_grads_reset_before(T dh, T dz_ext, T dhc_ext, T z, T hc,
                                                T h_prev) {
  StepGrads<T> g;
  const T dz = dh * (h_prev - hc) + dz_ext;
  const T dhc = dh * (1 - z) + dhc_ext;
  g.da_h = dhc * (1 - hc * hc);
  g.da_z = dz * z * (1 - z);
  g.da_r = T{};
  g.dh_prev = dh * z;
  return g;
}

// reset_after=false, second half: drh = d(r⊙h_prev) for this unit.
template <typename T>
GATEGRU_HD T reset_grad_reset_before(T drh, T dr_ext, T r, T h_prev) {
  return (drh * h_prev + dr_ext) * r * (1 - r);
}

}  // namespace
}  // namespace gategru
