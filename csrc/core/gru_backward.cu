// CUDA backward, in reverse time, mirroring gru_backward_cpu.cc with one block per slice
// of hidden units. A stage first finishes dL/dh for its units with the product of step
// t+1's pre-activation gradients and Uᵀ (which needs every unit of step t+1: hence the
// grid barrier between stages), then does step t's pointwise gradients. reset_after=false
// needs one more phase per step: d(r⊙h_prev) = da_h·U_hᵀ gives the reset gradient. The
// persistent kernel keeps the slice's rows of U in shared memory for the whole sequence.
// Weight gradients are not accumulated here: the caller forms them with large matmuls.
#include <cooperative_groups.h>

#include "gate_math.h"
#include "gru_cuda_common.cuh"

namespace gategru {
namespace {

using namespace cuda_detail;
namespace cg = cooperative_groups;

// T is the storage type; sums and scratch use A = AccOf<T> (cuda_storage.cuh).
template <typename T>
struct BackwardArgs {
  using A = AccOf<T>;
  GruBackwardParams<T> p;
  const int64_t* first_valid;  // (B) or null without a mask
  A* g_state;  // (B,H) dL/dh along the state path; owned by the unit's block
  A* g_carry;  // (B,H) gradient of an output that later masked steps repeat
  A* dhu;      // reset_after: (2,B,3H) gradient of h_prev·U + b, by step parity, so a
               // stage writes step t's while other blocks still read step t+1's
  int slice;
  int kw;
  int64_t rows_per_block;
};

// kStage: recurrent gradient from step t+1, then step t's pointwise gradients (t = -1:
// the last stage, which finishes d_h0). kReset: reset_after=false's second phase.
enum Phase { kStage, kReset };

// What a stage's pointwise step reads besides the product, loaded before it: dL/dh along
// the state path and the carried output gradient, dL/dh_seq, the step's gates, h_prev,
// hu_candidate (reset_after) and the gates' own gradients.
template <typename A>
struct StepInputs {
  A g_state, g_carry, d_out, z, hc, h_prev, r, hu, d_z, d_r, d_hc;
};

template <typename T, bool kResetAfter, int kPhase, typename Slice>
__device__ __forceinline__ void backward_phase(const BackwardArgs<T>& a, const Slice& s,
                                               int64_t t, int64_t j0, int wb, int64_t row0,
                                               int64_t row1, AccOf<T>* red) {
  using A = AccOf<T>;
  const GruBackwardParams<T>& p = a.p;
  const int64_t B = p.batch, H = p.units, time = p.time;
  const SeqMask m{p.mask, a.first_valid, time};
  auto h_prev = [&](int64_t b, int64_t jj) {
    return m.started(b, t) ? ld(p.h_seq + (b * time + t - 1) * H + jj) : ld(p.h0 + b * H + jj);
  };

  if constexpr (kPhase == kStage) {
    // Step t+1's gradient w.r.t. h_t·U (+b): null rows (masked step, or none) add nothing.
    // (A rows in scratch, or T rows of d_xw: a template on the row type.)
    auto next_rows = [&](int64_t b) {
      if constexpr (kResetAfter) {
        return t + 1 >= time || !m.valid(b, t + 1)
                   ? static_cast<const A*>(nullptr)
                   : static_cast<const A*>(a.dhu + (((t + 1) & 1) * B + b) * 3 * H);
      } else {
        return t + 1 >= time || !m.valid(b, t + 1)
                   ? static_cast<const T*>(nullptr)
                   : static_cast<const T*>(p.d_xw + (b * time + t + 1) * 3 * H);  // z, r
      }
    };
    // The pointwise step's loads, issued before the product (block_product's pre).
    auto inputs = [&](int64_t b, int j) {
      StepInputs<A> in{};
      const int64_t jj = j0 + j, si = b * H + jj, off = (b * time + t) * H + jj;
      in.g_state = load_cg(a.g_state + si);
      if (t < 0) return in;
      in.g_carry = load_cg(a.g_carry + si);
      in.d_out = load_or_zero(p.d_h_seq, off);
      if (!m.valid(b, t)) return in;
      in.z = ld(p.update + off);
      in.hc = ld(p.candidate + off);
      in.h_prev = h_prev(b, jj);
      in.d_z = load_or_zero(p.d_update, off);
      in.d_hc = load_or_zero(p.d_candidate, off);
      if constexpr (kResetAfter) {
        in.r = ld(p.reset + off);
        in.hu = ld(p.hu_candidate + off);
        in.d_r = load_or_zero(p.d_reset, off);
      }
      return in;
    };
    auto pointwise = [&](int64_t b, int j, const A(&v)[1], const StepInputs<A>& in) {
      const int64_t jj = j0 + j, si = b * H + jj;
      const A g = in.g_state + v[0];
      if (t < 0) {
        st(p.d_h0 + si, g);
        return;
      }
      T* dx = p.d_xw + (b * time + t) * 3 * H;
      const A carry = in.g_carry;
      const A dh_out = in.d_out;
      if (!m.valid(b, t)) {
        // State carried: g passes through. The output repeated h_seq[t-1] (or was 0).
        a.g_carry[si] = m.started(b, t) ? carry + dh_out : A(0);
        a.g_state[si] = g;
        for (int gate = 0; gate < 3; ++gate) st(dx + gate * H + jj, A(0));
        if (p.d_hu) {
          T* out = p.d_hu + (b * time + t) * 3 * H + jj;
          for (int gate = 0; gate < 3; ++gate) st(out + gate * H, A(0));
        }
        return;
      }
      const A dh = g + dh_out + carry;
      a.g_carry[si] = A(0);
      const A z = in.z, hc = in.hc, hp = in.h_prev;
      StepGrads<A> sg;
      if constexpr (kResetAfter) {
        const A r = in.r;
        sg = step_grads_reset_after(dh, in.d_z, in.d_r, in.d_hc, z, r, hc, hp, in.hu);
        A* d = a.dhu + ((t & 1) * B + b) * 3 * H;
        d[jj] = sg.da_z;
        d[H + jj] = sg.da_r;
        d[2 * H + jj] = sg.da_h * r;
        st(dx + H + jj, sg.da_r);
        if (p.d_hu) {
          T* out = p.d_hu + (b * time + t) * 3 * H;
          st(out + jj, sg.da_z);
          st(out + H + jj, sg.da_r);
          st(out + 2 * H + jj, sg.da_h * r);
        }
      } else {
        sg = step_grads_reset_before(dh, in.d_z, in.d_hc, z, hc, hp);
      }
      st(dx + jj, sg.da_z);
      st(dx + 2 * H + jj, sg.da_h);
      a.g_state[si] = sg.dh_prev;
    };
    block_product<A, 0, kResetAfter ? 3 : 2, true>(row0, row1, H, wb, a.kw, s, red, next_rows,
                                                   inputs, pointwise);
  } else {
    // d(r⊙h_prev) = da_h(t)·U_hᵀ; the reset gate's gradient and its share of dL/dh_prev.
    block_product<A, 2, 1, true>(
        row0, row1, H, wb, a.kw, s, red,
        [&](int64_t b) -> const T* {
          return m.valid(b, t) ? p.d_xw + (b * time + t) * 3 * H + 2 * H : nullptr;
        },
        [&](int64_t b, int j, const A(&v)[1]) {
          if (!m.valid(b, t)) return;
          const int64_t jj = j0 + j, si = b * H + jj, off = (b * time + t) * H + jj;
          const A r = ld(p.reset + off);
          st(p.d_xw + (b * time + t) * 3 * H + H + jj,
             reset_grad_reset_before(v[0], load_or_zero(p.d_reset, off), r, h_prev(b, jj)));
          a.g_state[si] = load_cg(a.g_state + si) + v[0] * r;
        });
  }
}

// The whole reverse sweep in one cooperative launch: block (x, y) owns units
// [x·slice, +slice) of rows [y·rpb, +rpb).
template <typename T, bool kResetAfter>
__global__ void __launch_bounds__(kThreads, 1) backward_persistent(BackwardArgs<T> a) {
  using A = AccOf<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int64_t H = a.p.units;
  A* weights = reinterpret_cast<A*>(smem);
  A* red = weights + H * SmemSlice<A>::kLd;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * a.slice;
  const int wb = block_width(a, j0);
  fill_smem_slice(weights, backward_slice(a.p.recurrent_kernel, H, j0, wb), H);
  __syncthreads();
  const SmemSlice<A> s{weights};
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * a.rows_per_block;
  const int64_t row1 = min(a.p.batch, row0 + a.rows_per_block);
  cg::grid_group grid = cg::this_grid();
  for (int64_t t = a.p.time - 1; t >= -1; --t) {
    backward_phase<T, kResetAfter, kStage>(a, s, t, j0, wb, row0, row1, red);
    if (t < 0) break;
    grid.sync();  // step t's gradients of every unit
    if constexpr (!kResetAfter) {
      backward_phase<T, false, kReset>(a, s, t, j0, wb, row0, row1, red);
      grid.sync();
    }
  }
}

// One phase of one step; block (x, y) owns units [x·slice, +slice) of rows [y·rpb, +rpb).
template <typename T, bool kResetAfter, int kPhase>
__global__ void __launch_bounds__(kThreads, 1) backward_step(BackwardArgs<T> a, int64_t t) {
  using A = AccOf<T>;
  __shared__ __align__(16) unsigned char red_bytes[cuda_launch::kReduceSmemBytes<A>];
  const int64_t H = a.p.units;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * a.slice;
  const int wb = block_width(a, j0);
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * a.rows_per_block;
  const int64_t row1 = min(a.p.batch, row0 + a.rows_per_block);
  backward_phase<T, kResetAfter, kPhase>(a, backward_slice(a.p.recurrent_kernel, H, j0, wb), t,
                                         j0, wb, row0, row1, reinterpret_cast<A*>(red_bytes));
}

template <typename T>
struct BackwardScratch {
  int64_t* first_valid = nullptr;
  AccOf<T>* g_state = nullptr;
  AccOf<T>* g_carry = nullptr;
  AccOf<T>* dhu = nullptr;
};

template <typename T>
size_t carve_backward(const GruBackwardParams<T>& p, void* base, BackwardScratch<T>* w) {
  Carver c(base);
  if (p.mask) w->first_valid = c.take<int64_t>(p.batch);
  w->g_state = c.take<AccOf<T>>(p.batch * p.units);
  w->g_carry = c.take<AccOf<T>>(p.batch * p.units);
  if (p.reset_after) w->dhu = c.take<AccOf<T>>(2 * p.batch * 3 * p.units);
  return c.bytes();
}

template <typename T>
auto persistent_kernel(bool reset_after) {
  return reset_after ? &backward_persistent<T, true> : &backward_persistent<T, false>;
}

}  // namespace

template <typename T>
size_t gru_backward_cuda_workspace(const GruBackwardParams<T>& p) {
  BackwardScratch<T> unused;
  return carve_backward(p, nullptr, &unused);
}

template <typename T>
int gru_backward_cuda(const GruBackwardParams<T>& p, void* stream_ptr, void* workspace,
                      size_t workspace_bytes, CudaPath path) {
  if (p.batch <= 0 || p.units <= 0) return cudaSuccess;
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  BackwardScratch<T> w;
  const size_t need = carve_backward(p, workspace, &w);
  if (need > workspace_bytes || workspace == nullptr) return cudaErrorInvalidValue;
  CudaLaunchPlan plan;
  const void* persistent = reinterpret_cast<const void*>(persistent_kernel<T>(p.reset_after));
  CHECK_CUDA(plan_launch<AccOf<T>>(persistent, p.batch, p.units, path, &plan));
  BackwardArgs<T> a{p,        w.first_valid,      w.g_state,          w.g_carry,
                    w.dhu,    plan.slice_width,   plan.warps_per_row, plan.rows_per_block};
  const size_t state_bytes = sizeof(AccOf<T>) * p.batch * p.units;
  if (p.d_h_last) {
    CHECK_CUDA(launch_widen(p.d_h_last, p.batch * p.units, w.g_state, stream));
  } else {
    CHECK_CUDA(cudaMemsetAsync(w.g_state, 0, state_bytes, stream));
  }
  CHECK_CUDA(cudaMemsetAsync(w.g_carry, 0, state_bytes, stream));
  if (p.mask) CHECK_CUDA(launch_first_valid(p.mask, p.batch, p.time, w.first_valid, stream));
  if (plan.persistent) {
    CHECK_CUDA(launch_persistent<AccOf<T>>(persistent_kernel<T>(p.reset_after), p.batch,
                                           p.units, path, stream, &plan, &a));
    if (plan.persistent) return cudaSuccess;
  }
  const dim3 grid(static_cast<unsigned>(plan.blocks_x), static_cast<unsigned>(plan.blocks_y));
  for (int64_t t = p.time - 1; t >= -1; --t) {
    if (p.reset_after) {
      CHECK_CUDA(launch_kernel(backward_step<T, true, kStage>, grid, 0, stream, a, t));
    } else {
      CHECK_CUDA(launch_kernel(backward_step<T, false, kStage>, grid, 0, stream, a, t));
      if (t >= 0) {
        CHECK_CUDA(launch_kernel(backward_step<T, false, kReset>, grid, 0, stream, a, t));
      }
    }
  }
  return cudaSuccess;
}

namespace cuda_detail {
template <typename T>
const void* backward_persistent_kernel(bool reset_after) {
  return reinterpret_cast<const void*>(persistent_kernel<T>(reset_after));
}
}  // namespace cuda_detail

#define GATEGRU_INSTANTIATE(T)                                                                 \
  template size_t gru_backward_cuda_workspace<T>(const GruBackwardParams<T>&);                 \
  template int gru_backward_cuda<T>(const GruBackwardParams<T>&, void*, void*, size_t,         \
                                    CudaPath);                                                 \
  template const void* cuda_detail::backward_persistent_kernel<T>(bool);
GATEGRU_INSTANTIATE(float)
GATEGRU_INSTANTIATE(double)
GATEGRU_INSTANTIATE(Half)
GATEGRU_INSTANTIATE(BFloat16)
#undef GATEGRU_INSTANTIATE

}  // namespace gategru
