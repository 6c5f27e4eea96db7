// How the CUDA kernels read and write each storage type, and the type they compute in:
// float and double compute as themselves; 16-bit floats (Half, BFloat16) are widened to
// float on load and rounded (to nearest) only when stored, so every sum accumulates in
// float. Scratch that only the kernels read (states, partial gradients) stays in Acc.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "gru_params.h"

namespace gategru::cuda_detail {

template <typename T>
struct Storage {
  using Acc = T;
  __device__ static __forceinline__ Acc load(const T* p) { return *p; }
  // Read-only for the whole kernel (weights, inputs): through the read-only cache.
  __device__ static __forceinline__ Acc load_ro(const T* p) { return __ldg(p); }
  // Written during this run by other blocks: through L2 (ld.global.cg), past any stale
  // line in this SM's L1.
  __device__ static __forceinline__ Acc load_cg(const T* p) { return __ldcg(p); }
  __device__ static __forceinline__ void store(T* p, Acc v) { *p = v; }
};

// A 16-bit float type as raw bits: Bits says how to widen and round them.
template <typename T, typename Bits>
struct Storage16 {
  using Acc = float;
  __device__ static __forceinline__ float load(const T* p) { return Bits::widen(p->bits); }
  __device__ static __forceinline__ float load_ro(const T* p) {
    return Bits::widen(__ldg(&p->bits));
  }
  __device__ static __forceinline__ float load_cg(const T* p) {
    return Bits::widen(__ldcg(&p->bits));
  }
  __device__ static __forceinline__ void store(T* p, float v) { p->bits = Bits::narrow(v); }
};

struct HalfBits {
  __device__ static __forceinline__ float widen(unsigned short b) {
    return __half2float(__ushort_as_half(b));
  }
  __device__ static __forceinline__ unsigned short narrow(float v) {
    return __half_as_ushort(__float2half_rn(v));
  }
};

struct BFloat16Bits {
  __device__ static __forceinline__ float widen(unsigned short b) {
    return __bfloat162float(__ushort_as_bfloat16(b));
  }
  __device__ static __forceinline__ unsigned short narrow(float v) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  }
};

template <>
struct Storage<Half> : Storage16<Half, HalfBits> {};
template <>
struct Storage<BFloat16> : Storage16<BFloat16, BFloat16Bits> {};

template <typename T>
using AccOf = typename Storage<T>::Acc;

template <typename T>
__device__ __forceinline__ AccOf<T> ld(const T* p) {
  return Storage<T>::load(p);
}
template <typename T>
__device__ __forceinline__ AccOf<T> ld_cg(const T* p) {
  return Storage<T>::load_cg(p);
}
template <typename T>
__device__ __forceinline__ AccOf<T> ld_ro(const T* p) {
  return Storage<T>::load_ro(p);
}
template <typename T>
__device__ __forceinline__ void st(T* p, AccOf<T> v) {
  Storage<T>::store(p, v);
}

}  // namespace gategru::cuda_detail
