// CUDA forward: the CPU kernel's semantics (gru_forward_cpu.cc) with one block per slice
// of hidden units. The persistent kernel keeps the slice's columns of U in shared memory
// for the whole sequence and meets the other blocks at a grid barrier after every phase;
// the per-step kernels run the same phase code with U read from global memory (L2).
#include <cooperative_groups.h>

#include <algorithm>

#include "gate_math.h"
#include "gru_cuda_common.cuh"

namespace gategru {
namespace {

using namespace cuda_detail;
namespace cg = cooperative_groups;

// T is the storage type; sums and scratch use A = AccOf<T> (cuda_storage.cuh).
template <typename T>
struct ForwardArgs {
  using A = AccOf<T>;
  GruForwardParams<T> p;
  const int64_t* first_valid;  // (B) or null without a mask
  A* z_tmp;                    // (B,H) reset_after=false: z from phase 1 to phase 2
  A* rh_tmp;                   // (B,H) reset_after=false: r⊙h_prev, read by every block
  int slice;                   // units per block
  int kw;                      // warps per row group
  int64_t rows_per_block;      // batch rows per block (grid.y)
};

// kAll: reset_after's single phase. kZR, kCand: reset_after=false's two phases (z, r and
// r⊙h_prev; then the candidate, whose product needs r⊙h_prev of every unit).
enum Phase { kAll, kZR, kCand };

// What a finish reads besides the product, loaded before it: the phase's xw columns and
// recurrent biases (kAll: z, r, h̃; kZR: z, r; kCand: h̃), the previous state, and (kCand)
// z from the first phase.
template <typename A>
struct FinishInputs {
  A x[3], bias[3], h_prev, z;
};

template <typename T>
__device__ void write_gates(const GruForwardParams<T>& p, int64_t off, AccOf<T> z, AccOf<T> r,
                            AccOf<T> hc) {
  if (p.update) st(p.update + off, z);
  if (p.reset) st(p.reset + off, r);
  if (p.candidate) st(p.candidate + off, hc);
}

// One phase of step t for the block's units [j0, j0+wb) and rows [row0, row1).
template <typename T, int kPhase, typename Slice>
__device__ __forceinline__ void forward_phase(const ForwardArgs<T>& a, const Slice& s, int64_t t,
                                              int64_t j0, int wb, int64_t row0, int64_t row1,
                                              AccOf<T>* red) {
  using A = AccOf<T>;
  const GruForwardParams<T>& p = a.p;
  const int64_t H = p.units, time = p.time;
  const SeqMask m{p.mask, a.first_valid, time};
  const T* bias = p.recurrent_bias;
  // The state step t starts from (sequence_layout.h's h_prev).
  auto h_prev = [&](int64_t b) -> const T* {
    return m.started(b, t) ? p.h_seq + (b * time + t - 1) * H : p.h0 + b * H;
  };
  auto finish = [&](int64_t b, int64_t jj, int64_t off, A h) {
    st(p.h_seq + off, h);
    if (t == time - 1) st(p.h_last + b * H + jj, h);
  };
  // A masked step repeats the previous output (0 before the first unmasked step), carries
  // the state and has zero gates; it is written in the step's last phase.
  auto masked = [&](int64_t b, int64_t jj, int64_t off) {
    const A carried = m.started(b, t) ? ld_cg(p.h_seq + off - H) : A(0);
    st(p.h_seq + off, carried);
    write_gates(p, off, A(0), A(0), A(0));
    if (p.hu_candidate) st(p.hu_candidate + off, A(0));
    if (t == time - 1)
      st(p.h_last + b * H + jj, m.any_valid(b) ? carried : ld(p.h0 + b * H + jj));
  };
  auto state_rows = [&](int64_t b) -> const T* { return m.valid(b, t) ? h_prev(b) : nullptr; };
  // The finish's loads, issued before the product (block_product's pre). A masked step
  // loads nothing here.
  auto inputs = [&](int64_t b, int j) {
    FinishInputs<A> in{};
    if (!m.valid(b, t)) return in;
    const int64_t jj = j0 + j;
    const T* x = p.xw + (b * time + t) * 3 * H;
    constexpr int g0 = kPhase == kCand ? 2 : 0, n = kPhase == kAll ? 3 : kPhase == kZR ? 2 : 1;
#pragma unroll
    for (int g = 0; g < n; ++g) {
      in.x[g] = ld(x + (g0 + g) * H + jj);
      in.bias[g] = ld(bias + (g0 + g) * H + jj);
    }
    in.h_prev = ld_cg(h_prev(b) + jj);
    if constexpr (kPhase == kCand) in.z = load_cg(a.z_tmp + b * H + jj);
    return in;
  };

  if constexpr (kPhase == kAll) {
    block_product<A, 0, 3, false>(
        row0, row1, H, wb, a.kw, s, red, state_rows,
        inputs, [&](int64_t b, int j, const A(&v)[3], const FinishInputs<A>& in) {
          const int64_t jj = j0 + j, off = (b * time + t) * H + jj;
          if (!m.valid(b, t)) return masked(b, jj, off);
          const A uh = v[2] + in.bias[2];
          const GateValues<A> g = gates_reset_after(in.x[0], in.x[1], in.x[2], v[0] + in.bias[0],
                                                    v[1] + in.bias[1], uh);
          finish(b, jj, off, mix_state(g.z, in.h_prev, g.hc));
          write_gates(p, off, g.z, g.r, g.hc);
          if (p.hu_candidate) st(p.hu_candidate + off, uh);
        });
  } else if constexpr (kPhase == kZR) {
    block_product<A, 0, 2, false>(
        row0, row1, H, wb, a.kw, s, red, state_rows,
        inputs, [&](int64_t b, int j, const A(&v)[2], const FinishInputs<A>& in) {
          if (!m.valid(b, t)) return;
          const int64_t jj = j0 + j, off = (b * time + t) * H + jj;
          const A z = sigmoid(in.x[0] + v[0] + in.bias[0]);
          const A r = sigmoid(in.x[1] + v[1] + in.bias[1]);
          a.z_tmp[b * H + jj] = z;
          a.rh_tmp[b * H + jj] = r * in.h_prev;
          if (p.reset) st(p.reset + off, r);
        });
  } else {
    block_product<A, 2, 1, false>(
        row0, row1, H, wb, a.kw, s, red,
        [&](int64_t b) -> const A* { return m.valid(b, t) ? a.rh_tmp + b * H : nullptr; },
        inputs, [&](int64_t b, int j, const A(&v)[1], const FinishInputs<A>& in) {
          const int64_t jj = j0 + j, off = (b * time + t) * H + jj;
          if (!m.valid(b, t)) return masked(b, jj, off);
          const A z = in.z;
          const A hc = tanh_act(in.x[0] + v[0] + in.bias[0]);
          finish(b, jj, off, mix_state(z, in.h_prev, hc));
          if (p.update) st(p.update + off, z);
          if (p.candidate) st(p.candidate + off, hc);
        });
  }
}

// The whole sequence in one cooperative launch: block (x, y) owns units [x·slice, +slice)
// of rows [y·rpb, +rpb).
template <typename T, bool kResetAfter>
__global__ void __launch_bounds__(kThreads, 1) forward_persistent(ForwardArgs<T> a) {
  using A = AccOf<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int64_t H = a.p.units;
  A* weights = reinterpret_cast<A*>(smem);
  A* red = weights + H * SmemSlice<A>::kLd;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * a.slice;
  const int wb = block_width(a, j0);
  fill_smem_slice(weights, forward_slice(a.p.recurrent_kernel, H, j0, wb), H);
  __syncthreads();
  const SmemSlice<A> s{weights};
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * a.rows_per_block;
  const int64_t row1 = min(a.p.batch, row0 + a.rows_per_block);
  cg::grid_group grid = cg::this_grid();
  for (int64_t t = 0; t < a.p.time; ++t) {
    if constexpr (kResetAfter) {
      forward_phase<T, kAll>(a, s, t, j0, wb, row0, row1, red);
    } else {
      forward_phase<T, kZR>(a, s, t, j0, wb, row0, row1, red);
      grid.sync();  // r⊙h_prev of every unit
      forward_phase<T, kCand>(a, s, t, j0, wb, row0, row1, red);
    }
    if (t + 1 < a.p.time) grid.sync();  // h_t of every unit
  }
}

// One phase of one step; block (x, y) owns units [x·slice, +slice) of rows [y·rpb, +rpb).
template <typename T, int kPhase>
__global__ void __launch_bounds__(kThreads, 1) forward_step(ForwardArgs<T> a, int64_t t) {
  using A = AccOf<T>;
  __shared__ __align__(16) unsigned char red_bytes[cuda_launch::kReduceSmemBytes<A>];
  const int64_t H = a.p.units;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * a.slice;
  const int wb = block_width(a, j0);
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * a.rows_per_block;
  const int64_t row1 = min(a.p.batch, row0 + a.rows_per_block);
  forward_phase<T, kPhase>(a, forward_slice(a.p.recurrent_kernel, H, j0, wb), t, j0, wb, row0,
                           row1, reinterpret_cast<A*>(red_bytes));
}

// xw = x·W + b_in for every (row, step), for calls that pass the inputs and the kernel
// (a graph built for the CPU's fused projection). Each thread owns four columns of one
// row: the row of x is read by the whole warp at once, W's columns coalesced. TF's own
// matmul (cuBLAS) is faster; the layer uses that on GPUs and this keeps such graphs
// running anywhere.
template <typename T>
__global__ void project_inputs(const T* x, const T* kernel, const T* bias, int64_t rows,
                               int64_t width, int64_t cols, T* xw) {
  constexpr int kCols = 4;
  const int64_t groups = (cols + kCols - 1) / kCols;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  using A = AccOf<T>;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < rows * groups; i += stride) {
    const int64_t n = i / groups, c0 = (i % groups) * kCols;
    const int nc = static_cast<int>(min(static_cast<int64_t>(kCols), cols - c0));
    A acc[kCols];
    for (int c = 0; c < kCols; ++c) acc[c] = c < nc ? ld_ro(bias + c0 + c) : A(0);
    const T* xr = x + n * width;
    for (int64_t k = 0; k < width; ++k) {
      const A xv = ld_ro(xr + k);
      const T* wr = kernel + k * cols + c0;
      for (int c = 0; c < kCols; ++c)
        if (c < nc) acc[c] += xv * ld_ro(wr + c);
    }
    for (int c = 0; c < nc; ++c) st(xw + n * cols + c0 + c, acc[c]);
  }
}

template <typename T>
struct ForwardScratch {
  int64_t* first_valid = nullptr;
  AccOf<T>* z_tmp = nullptr;
  AccOf<T>* rh_tmp = nullptr;
  T* xw = nullptr;  // with a kernel: the projections
};

template <typename T>
size_t carve_forward(const GruForwardParams<T>& p, void* base, ForwardScratch<T>* w) {
  Carver c(base);
  if (p.kernel) w->xw = c.take<T>(p.batch * p.time * 3 * p.units);
  if (p.mask) w->first_valid = c.take<int64_t>(p.batch);
  if (!p.reset_after) {
    w->z_tmp = c.take<AccOf<T>>(p.batch * p.units);
    w->rh_tmp = c.take<AccOf<T>>(p.batch * p.units);
  }
  return c.bytes();
}

template <typename T>
auto persistent_kernel(bool reset_after) {
  return reset_after ? &forward_persistent<T, true> : &forward_persistent<T, false>;
}

}  // namespace

template <typename T>
size_t gru_forward_cuda_workspace(const GruForwardParams<T>& p) {
  ForwardScratch<T> unused;
  return carve_forward(p, nullptr, &unused);
}

template <typename T>
int gru_forward_cuda(const GruForwardParams<T>& params, void* stream_ptr, void* workspace,
                     size_t workspace_bytes, CudaPath path) {
  GruForwardParams<T> p = params;
  if (p.batch <= 0 || p.units <= 0) return cudaSuccess;
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (p.time == 0) {  // no step: the last state is h0
    CHECK_CUDA(cudaMemcpyAsync(p.h_last, p.h0, sizeof(T) * p.batch * p.units,
                               cudaMemcpyDeviceToDevice, stream));
    return cudaSuccess;
  }
  ForwardScratch<T> w;
  const size_t need = carve_forward(p, workspace, &w);
  if (need > workspace_bytes || (need > 0 && workspace == nullptr)) return cudaErrorInvalidValue;
  if (p.kernel) {
    const int64_t rows = p.batch * p.time, groups = cuda_launch::ceil_div(3 * p.units, 4);
    const dim3 grid(static_cast<unsigned>(
        std::min<int64_t>(cuda_launch::ceil_div(rows * groups, kThreads), 65535)));
    CHECK_CUDA(launch_kernel(project_inputs<T>, grid, 0, stream, p.x, p.kernel, p.input_bias,
                             rows, p.input_width, 3 * p.units, w.xw));
    p.xw = w.xw;
  }
  CudaLaunchPlan plan;
  const void* persistent = reinterpret_cast<const void*>(persistent_kernel<T>(p.reset_after));
  CHECK_CUDA(plan_launch<AccOf<T>>(persistent, p.batch, p.units, path, &plan));
  ForwardArgs<T> a{p, w.first_valid, w.z_tmp, w.rh_tmp, plan.slice_width, plan.warps_per_row,
                   plan.rows_per_block};
  if (p.mask) CHECK_CUDA(launch_first_valid(p.mask, p.batch, p.time, w.first_valid, stream));
  if (plan.persistent) {
    CHECK_CUDA(launch_persistent<AccOf<T>>(persistent_kernel<T>(p.reset_after), p.batch,
                                           p.units, path, stream, &plan, &a));
    if (plan.persistent) return cudaSuccess;
  }
  const dim3 grid(static_cast<unsigned>(plan.blocks_x), static_cast<unsigned>(plan.blocks_y));
  for (int64_t t = 0; t < p.time; ++t) {
    if (p.reset_after) {
      CHECK_CUDA(launch_kernel(forward_step<T, kAll>, grid, 0, stream, a, t));
    } else {
      CHECK_CUDA(launch_kernel(forward_step<T, kZR>, grid, 0, stream, a, t));
      CHECK_CUDA(launch_kernel(forward_step<T, kCand>, grid, 0, stream, a, t));
    }
  }
  return cudaSuccess;
}

namespace cuda_detail {
template <typename T>
const void* forward_persistent_kernel(bool reset_after) {
  return reinterpret_cast<const void*>(persistent_kernel<T>(reset_after));
}
}  // namespace cuda_detail

#define GATEGRU_INSTANTIATE(T)                                                               \
  template size_t gru_forward_cuda_workspace<T>(const GruForwardParams<T>&);                 \
  template int gru_forward_cuda<T>(const GruForwardParams<T>&, void*, void*, size_t, CudaPath); \
  template const void* cuda_detail::forward_persistent_kernel<T>(bool);
GATEGRU_INSTANTIATE(float)
GATEGRU_INSTANTIATE(double)
GATEGRU_INSTANTIATE(Half)
GATEGRU_INSTANTIATE(BFloat16)
#undef GATEGRU_INSTANTIATE

}  // namespace gategru
