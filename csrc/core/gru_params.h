// Plain parameter structs for the GRU sequence kernels (CPU and CUDA).
// Layouts are batch-major and dense: xw (B,T,3H), sequences (B,T,H), states (B,H),
// recurrent kernel (H,3H) and input kernel (I,3H) with column blocks [z | r | h] as in Keras.
#pragma once
#include <cstdint>

namespace gategru {

// 16-bit float storage for the CUDA kernels (IEEE half and bfloat16) as raw bits, so that
// host code needs no CUDA header; the kernels compute in float (cuda_storage.cuh).
struct alignas(2) Half {
  uint16_t bits;
};
struct alignas(2) BFloat16 {
  uint16_t bits;
};

template <typename T>
struct GruForwardParams {
  int64_t batch = 0, time = 0, units = 0;
  bool reset_after = true;  // Keras default (= cuDNN): r multiplies (h·U_h + b_h)
  // The input projections: either xw (B,T,3H) = x·W + b_in, computed by the caller, or
  // the inputs x with the kernel W and b_in, projected inside the step (no xw round trip).
  const T* xw = nullptr;              // (B,T,3H), or null when `kernel` is set
  int64_t input_width = 0;            // I
  const T* x = nullptr;               // (B,T,I)
  const T* kernel = nullptr;          // (I,3H); null: use xw
  const T* input_bias = nullptr;      // (3H)

  // inputs: xw without a kernel; with one, x of `width` features per step.
  void set_inputs(const T* inputs, const T* input_kernel, const T* bias, int64_t width) {
    xw = input_kernel ? nullptr : inputs;
    x = input_kernel ? inputs : nullptr;
    kernel = input_kernel;
    input_bias = input_kernel ? bias : nullptr;
    input_width = input_kernel ? width : 0;
  }
  const T* h0 = nullptr;              // (B,H)
  const T* recurrent_kernel = nullptr;  // (H,3H)
  const T* recurrent_bias = nullptr;  // (3H); reset_after=false adds it like an input bias
  const bool* mask = nullptr;         // (B,T) or null: false = carry the state
  T* h_seq = nullptr;                 // (B,T,H) output; masked steps repeat the previous output
  T* h_last = nullptr;                // (B,H) final state
  // Gate outputs (B,T,H); null when the caller wants none (inference without capture).
  T* update = nullptr;
  T* reset = nullptr;
  T* candidate = nullptr;
  T* hu_candidate = nullptr;  // (B,T,H) h·U_h + b_h, kept for backward (reset_after only)
};

template <typename T>
struct GruBackwardParams {
  int64_t batch = 0, time = 0, units = 0;
  bool reset_after = true;
  const T* h0 = nullptr;
  const T* recurrent_kernel = nullptr;
  const bool* mask = nullptr;
  // Forward results (all required).
  const T* h_seq = nullptr;
  const T* update = nullptr;
  const T* reset = nullptr;
  const T* candidate = nullptr;
  const T* hu_candidate = nullptr;  // reset_after only
  // Incoming gradients; the gate ones may be null (no loss on the gates).
  const T* d_h_seq = nullptr;
  const T* d_h_last = nullptr;
  const T* d_update = nullptr;
  const T* d_reset = nullptr;
  const T* d_candidate = nullptr;
  // Outputs: gradient of the pre-activations (= of xw) and of h0.
  T* d_xw = nullptr;  // (B,T,3H)
  T* d_h0 = nullptr;  // (B,H)
  // Optional, reset_after only: (B,T,3H) gradient of h_prev·U + b_rec, [da_z, da_r, da_h·r],
  // which the recurrent kernel's and bias's gradients need (0 at masked steps).
  T* d_hu = nullptr;
};

}  // namespace gategru
