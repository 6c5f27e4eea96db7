// Scratch memory of the CPU kernels, allocated by the dispatcher (gru_cpu.cc) so that the
// per-instruction-set kernels allocate nothing.
#pragma once
#include <cstdint>

namespace gategru {

template <typename T>
struct CpuWorkspace {
  int64_t* first_valid = nullptr;  // (B) first unmasked step per row
  T* panels = nullptr;             // (units padded to 32) × 3·units: the packed recurrent kernel
  T* input_panels = nullptr;       // (units padded to 32) × 3·input_width: the packed kernel
  T* rows_a = nullptr;             // (B, H) forward: z; backward: dL/dh on the state path
  T* rows_b = nullptr;             // (B, H) forward: r⊙h_prev; backward: carried output grads
  T* rows_c = nullptr;             // (B, H) forward, reset_after=false: h̃'s input part
  T* dhu = nullptr;                // (2, B, 3H) backward, reset_after: dL/d(h_prev·U + b)
  T* products = nullptr;           // (2, B, product_row) forward, rows streamed: x·W, h_prev·U
};

}  // namespace gategru
