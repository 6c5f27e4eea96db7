// Code shared by the CUDA forward and backward: the block-level recurrent product over a
// weight slice (in shared or global memory), the mask rules of sequence_layout.h on the
// device, workspace carving and launch planning.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda_check.h"
#include "cuda_launch_heuristics.h"
#include "cuda_storage.cuh"
#include "gru_cuda.h"

namespace gategru::cuda_detail {

constexpr int W = cuda_launch::kSliceMax;
constexpr int RB = cuda_launch::kRowsPerWarp;
constexpr int kThreads = cuda_launch::kThreads;
constexpr int kWarps = cuda_launch::kWarps;

// Values the op itself writes during a run are read through L2 (ld.global.cg): another
// SM may have written them after this SM's L1 cached the line.
template <typename T>
__device__ __forceinline__ T load_cg(const T* p) {
  return __ldcg(p);
}

template <typename T>
__device__ __forceinline__ AccOf<T> load_or_zero(const T* p, int64_t i) {
  return p ? ld(p + i) : AccOf<T>(0);
}

// sequence_layout.h's rules. first_valid (B) is each row's first unmasked step, computed
// by first_valid_kernel; null without a mask (every step valid, first_valid = 0).
struct SeqMask {
  const bool* mask;
  const int64_t* first_valid;
  int64_t time;
  __device__ int64_t first(int64_t b) const { return first_valid ? load_cg(first_valid + b) : 0; }
  __device__ bool valid(int64_t b, int64_t t) const { return !mask || mask[b * time + t]; }
  // Step t starts from the previous output (else h0); masked, it repeats it (else 0).
  __device__ bool started(int64_t b, int64_t t) const { return t > first(b); }
  __device__ bool any_valid(int64_t b) const { return first(b) < time; }
};

// A block's weight slice S(g, j, k), gates g < 3, units j < wb, k < H, in global memory.
// kUnitsContiguous: S(g, j, k) = base[k·stride + g·H + j] (forward: columns of U), else
// base[j·stride + g·H + k] (backward: rows of U). Compile-time layouts keep the address
// arithmetic to one pointer per k (forward) or per unit (backward).
template <typename T, bool kUnitsContiguous>
struct GlobalSlice {
  using A = AccOf<T>;
  const T* base;
  int64_t stride, H;
  int wb;
  __device__ A at(int g, int j, int64_t k) const {
    return ld_ro(kUnitsContiguous ? base + k * stride + g * H + j : base + j * stride + g * H + k);
  }
  template <int G0, int NG>
  __device__ __forceinline__ void load(int64_t k, A (&w)[NG][W]) const {
#pragma unroll
    for (int g = 0; g < NG; ++g) {
#pragma unroll
      for (int j = 0; j < W; ++j) w[g][j] = j < wb ? at(G0 + g, j, k) : A(0);
    }
  }
};

// Forward: S(g, j, k) = U[k, g·H + j0 + j], columns of U (products h·U).
template <typename T>
__device__ GlobalSlice<T, true> forward_slice(const T* U, int64_t H, int64_t j0, int wb) {
  return {U + j0, 3 * H, H, wb};
}

// Backward: S(g, j, k) = U[j0 + j, g·H + k], rows of U (products d·Uᵀ).
template <typename T>
__device__ GlobalSlice<T, false> backward_slice(const T* U, int64_t H, int64_t j0, int wb) {
  return {U + j0 * 3 * H, 3 * H, H, wb};
}

__device__ __forceinline__ void load16(const float* p, float* out) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  out[0] = v.x;
  out[1] = v.y;
  out[2] = v.z;
  out[3] = v.w;
}
__device__ __forceinline__ void load16(const double* p, double* out) {
  const double2 v = *reinterpret_cast<const double2*>(p);
  out[0] = v.x;
  out[1] = v.y;
}

// The slice resident in shared memory, in the compute type: s[k·kLd + g·W + j], zero for
// j ≥ wb; rows are 16-byte aligned and padded (kWeightRowStride) so they are read with
// 16-byte loads.
template <typename T>
struct SmemSlice {
  static constexpr int64_t kLd = cuda_launch::kWeightRowStride<T>;
  static constexpr int kVec = 16 / sizeof(T);
  const T* s;
  template <int G0, int NG>
  __device__ __forceinline__ void load(int64_t k, T (&w)[NG][W]) const {
    const T* row = s + k * kLd + G0 * W;
#pragma unroll
    for (int g = 0; g < NG; ++g) {
#pragma unroll
      for (int q = 0; q < W / kVec; ++q) load16(row + g * W + q * kVec, &w[g][q * kVec]);
    }
  }
};

// Copies a slice into shared memory (whole block; the caller syncs after). The loop runs
// along the slice's contiguous axis in global memory, so reads coalesce.
template <typename A, typename T, bool kUnitsContiguous>
__device__ void fill_smem_slice(A* s, const GlobalSlice<T, kUnitsContiguous>& src, int64_t H) {
  constexpr int64_t kCols = 3 * W;
  const int64_t n = H * kCols;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const int64_t k = kUnitsContiguous ? i / kCols : i % H;
    const int64_t c = kUnitsContiguous ? i % kCols : i / H;
    const int g = static_cast<int>(c / W), j = static_cast<int>(c % W);
    s[k * SmemSlice<A>::kLd + c] = j < src.wb ? src.at(g, j, k) : A(0);
  }
}

// Sums v[0..N) over the warp's 32 lanes and calls store(i, sum_i) once per i, from one
// lane each. Recursive halving: at each exchange a lane keeps one half of the values it
// holds and receives its partner's sums of that half, so the warp spends about N shuffles
// instead of the 5·N of a butterfly per value. Once the values cannot be halved, the rest
// are plain butterflies (Dup: the lane bits whose lanes then hold duplicates).
template <typename T, int N, int M = 16, int Dup = 0, typename Store>
__device__ __forceinline__ void warp_reduce_scatter(const T (&v)[N], int lane, int base,
                                                    Store store) {
  if constexpr (M == 0) {
    if ((lane & Dup) == 0) {
#pragma unroll
      for (int i = 0; i < N; ++i) store(base + i, v[i]);
    }
  } else if constexpr (N % 2 == 0) {
    constexpr int kHalf = N / 2;
    const bool upper = (lane & M) != 0;
    T kept[kHalf];
#pragma unroll
    for (int i = 0; i < kHalf; ++i) {
      const T send = upper ? v[i] : v[i + kHalf];
      const T keep = upper ? v[i + kHalf] : v[i];
      kept[i] = keep + __shfl_xor_sync(0xffffffffu, send, M);
    }
    warp_reduce_scatter<T, kHalf, M / 2, Dup>(kept, lane, base + (upper ? kHalf : 0), store);
  } else {
    T summed[N];
#pragma unroll
    for (int i = 0; i < N; ++i) summed[i] = v[i] + __shfl_xor_sync(0xffffffffu, v[i], M);
    warp_reduce_scatter<T, N, M / 2, Dup | M>(summed, lane, base, store);
  }
}

// The recurrent product of one block, for rows [row0, row1) and its units j < wb:
//   kSumGates=false: out[g][j] = Σ_k a_b[k] · S(G0+g, j, k)                  (h·U, forward)
//   kSumGates=true:  out[0][j] = Σ_g Σ_k a_b[g·H + k] · S(G0+g, j, k)   (d·Uᵀ, backward)
// over g < NG, k < H, where a_b = row_ptr(b) (null: a zero row, not read; any storage
// type). Then calls fin(b, j, out, pre(b, j)) once per (row, unit), from any thread of the
// block; pre(b, j) runs in that thread before the product, so the loads the finish needs
// (inputs, biases, the previous state) are in flight while the product runs instead of
// after it. Each warp computes RB rows; `kw` warps split the k range of a row group; lanes
// take every 32nd k; sums meet in `red` (shared, kReduceSmemBytes). Sums are in T, the
// compute type. Every thread of the block must call this.
template <typename T, int G0, int NG, bool kSumGates, typename Slice, typename RowFn,
          typename PreFn, typename FinFn>
__device__ __forceinline__ void block_product(int64_t row0, int64_t row1, int64_t H, int wb,
                                              int kw, const Slice& s, T* red, RowFn row_ptr,
                                              PreFn pre, FinFn fin) {
  using Row = decltype(row_ptr(int64_t{0}));
  constexpr int kNA = kSumGates ? NG : 1;  // activation values per (row, k)
  constexpr int kNO = kSumGates ? 1 : NG;  // outputs per (row, unit)
  constexpr int kPerWarp = RB * kNO * W;
  // About kKUnroll·RB activation loads in flight per lane, whatever kNA is.
  constexpr int kU = cuda_launch::kKUnroll / kNA > 0 ? cuda_launch::kKUnroll / kNA : 1;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int slots = kWarps / kw, slot = warp / kw, kpart = warp % kw;
  const int64_t kstep = 32 * static_cast<int64_t>(kw);
  // Each thread finishes at most one (row, unit) per row group: entry threadIdx.x.
  static_assert(kWarps * RB * W <= kThreads, "one finish per thread and row group");
  const int fsl = threadIdx.x / (RB * W), fr = (threadIdx.x / W) % RB, fj = threadIdx.x % W;
  for (int64_t b0 = row0; b0 < row1; b0 += static_cast<int64_t>(slots) * RB) {
    const int64_t fb = b0 + static_cast<int64_t>(fsl) * RB + fr;
    const bool finishes = fsl < slots && fb < row1 && fj < wb;
    decltype(pre(fb, fj)) pf{};
    if (finishes) pf = pre(fb, fj);
    Row a[RB];
#pragma unroll
    for (int r = 0; r < RB; ++r) {
      const int64_t b = b0 + static_cast<int64_t>(slot) * RB + r;
      a[r] = b < row1 ? row_ptr(b) : nullptr;
    }
    T acc[kPerWarp];  // acc[(r·kNO + o)·W + j]: the layout of `red`
#pragma unroll
    for (int i = 0; i < kPerWarp; ++i) acc[i] = T(0);

    for (int64_t k0 = static_cast<int64_t>(kpart) * 32 + lane; k0 < H; k0 += kU * kstep) {
      T av[kU][RB][kNA];  // all loads in flight before the first use
#pragma unroll
      for (int u = 0; u < kU; ++u)
#pragma unroll
        for (int r = 0; r < RB; ++r)
#pragma unroll
          for (int g = 0; g < kNA; ++g) {
            const int64_t k = k0 + u * kstep;
            av[u][r][g] = (a[r] != nullptr && k < H) ? T(ld_cg(a[r] + g * H + k)) : T(0);
          }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int64_t k = k0 + u * kstep;
        if (k < H) {
          T w[NG][W];
          s.template load<G0, NG>(k, w);
#pragma unroll
          for (int r = 0; r < RB; ++r)
#pragma unroll
            for (int g = 0; g < NG; ++g)
#pragma unroll
              for (int j = 0; j < W; ++j)
                acc[(r * kNO + (kSumGates ? 0 : g)) * W + j] +=
                    av[u][r][kSumGates ? g : 0] * w[g][j];
        }
      }
    }

    T* mine = red + warp * kPerWarp;
    warp_reduce_scatter(acc, lane, 0, [&](int i, T v) { mine[i] = v; });
    __syncthreads();
    if (finishes) {
      T out[kNO];
#pragma unroll
      for (int o = 0; o < kNO; ++o) {
        T v = T(0);
        for (int q = 0; q < kw; ++q)
          v += red[(fsl * kw + q) * kPerWarp + (fr * kNO + o) * W + fj];
        out[o] = v;
      }
      fin(fb, fj, out, pf);
    }
    __syncthreads();  // `red` is reused by the next row group
  }
}

// block_product without prefetching: fin(b, j, out).
struct NoPrefetch {};
template <typename T, int G0, int NG, bool kSumGates, typename Slice, typename RowFn,
          typename FinFn>
__device__ __forceinline__ void block_product(int64_t row0, int64_t row1, int64_t H, int wb,
                                              int kw, const Slice& s, T* red, RowFn row_ptr,
                                              FinFn fin) {
  block_product<T, G0, NG, kSumGates>(
      row0, row1, H, wb, kw, s, red, row_ptr, [](int64_t, int) { return NoPrefetch{}; },
      [&](int64_t b, int j, const auto& out, NoPrefetch) { fin(b, j, out); });
}

// Units of the block starting at unit j0 (the last block may be narrower). Args: the
// forward or backward kernel arguments.
template <typename Args>
__device__ int block_width(const Args& a, int64_t j0) {
  return static_cast<int>(min(static_cast<int64_t>(a.slice), a.p.units - j0));
}

// The persistent kernels (defined in gru_forward.cu / gru_backward.cu), for planning.
template <typename T>
const void* forward_persistent_kernel(bool reset_after);
template <typename T>
const void* backward_persistent_kernel(bool reset_after);

namespace {

// first_valid[b] = first unmasked step of row b (time if none): sequence_layout.h's rule.
__global__ void first_valid_kernel(const bool* mask, int64_t batch, int64_t time,
                                   int64_t* first_valid) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= batch) return;
  const bool* row = mask + b * time;
  int64_t s = 0;
  while (s < time && !row[s]) ++s;
  first_valid[b] = s;
}

}  // namespace

template <typename T>
struct Identity {
  using type = T;
};

// kernel<<<grid, kThreads, smem, stream>>>(args...), through cudaLaunchKernel; the
// arguments convert to the kernel's parameter types.
template <typename... P>
int launch_kernel(void (*kernel)(P...), dim3 grid, size_t smem, cudaStream_t stream,
                  typename Identity<P>::type... args) {
  void* ptrs[] = {static_cast<void*>(&args)...};
  CHECK_CUDA(cudaLaunchKernel(kernel, grid, dim3(kThreads), ptrs, smem, stream));
  return cudaSuccess;
}

// The same as a cooperative launch: every block resident at once (grid.sync() allowed).
// cudaErrorCooperativeLaunchTooLarge comes back when fewer blocks fit than the occupancy
// query promised (an MPS thread limit, say); callers then fall back to the per-step path.
template <typename... P>
int launch_cooperative(void (*kernel)(P...), dim3 grid, size_t smem, cudaStream_t stream,
                       typename Identity<P>::type... args) {
  void* ptrs[] = {static_cast<void*>(&args)...};
  const cudaError_t err =
      cudaLaunchCooperativeKernel(kernel, grid, dim3(kThreads), ptrs, smem, stream);
  if (err == cudaErrorCooperativeLaunchTooLarge) cudaGetLastError();  // not sticky: ours
  return err;
}

template <typename T>
__global__ void widen_kernel(const T* src, int64_t n, AccOf<T>* dst) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = ld(src + i);
}

// dst = src in the compute type (a device-to-device copy for float and double).
template <typename T>
int launch_widen(const T* src, int64_t n, AccOf<T>* dst, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(cuda_launch::ceil_div(n, kThreads)));
  return n > 0 ? launch_kernel(widen_kernel<T>, grid, 0, stream, src, n, dst) : cudaSuccess;
}

inline int launch_first_valid(const bool* mask, int64_t batch, int64_t time,
                              int64_t* first_valid, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(cuda_launch::ceil_div(batch, kThreads)));
  return launch_kernel(first_valid_kernel, grid, 0, stream, mask, batch, time, first_valid);
}

// Hands out 256-byte-aligned pieces of the caller's workspace; with a null base it only
// counts, which is how the *_workspace() functions size it.
class Carver {
 public:
  explicit Carver(void* base) : base_(static_cast<char*>(base)) {}
  template <typename U>
  U* take(int64_t count) {
    offset_ = (offset_ + 255) / 256 * 256;
    U* p = base_ ? reinterpret_cast<U*>(base_ + offset_) : nullptr;
    offset_ += static_cast<size_t>(count) * sizeof(U);
    return p;
  }
  size_t bytes() const { return offset_; }

 private:
  char* base_;
  size_t offset_ = 0;
};

// Chooses the persistent kernel or the per-step kernels on the current device. Also
// raises the persistent kernel's dynamic shared-memory limit, which its launch needs.
template <typename T>
int plan_launch(const void* persistent_kernel, int64_t batch, int64_t units, CudaPath path,
                CudaLaunchPlan* plan) {
  namespace cl = cuda_launch;
  int device = 0, sms = 0, coop = 0, optin = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  CHECK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  CHECK_CUDA(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device));
  CHECK_CUDA(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  *plan = CudaLaunchPlan{};
  const cl::PersistentOverride& forced = cl::persistent_override();
  const int forced_slice = forced.slice_width.load();
  plan->slice_width = forced_slice > 0 ? std::min(forced_slice, cl::kSliceMax)
                                       : cl::persistent_slice_width(units);
  plan->blocks_x = cl::ceil_div(units, plan->slice_width);
  const size_t smem = cl::persistent_smem_bytes<T>(units);
  const char* refusal = "per-step path requested";
  int per_sm = 0;
  if (path != CudaPath::kPerStep) {
    cudaFuncAttributes attributes;  // the kernel's static shared memory counts against optin
    CHECK_CUDA(cudaFuncGetAttributes(&attributes, persistent_kernel));
    const int dynamic_limit = optin - static_cast<int>(attributes.sharedSizeBytes);
    if (coop != 0 && smem <= static_cast<size_t>(dynamic_limit)) {
      // The device's whole opt-in limit, not this call's size: the limit is one value per
      // kernel for the process, and a concurrent call with a smaller H must not lower it
      // between our query and our launch.
      CHECK_CUDA(cudaFuncSetAttribute(
          persistent_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dynamic_limit));
      CHECK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, persistent_kernel,
                                                               kThreads, smem));
    }
    refusal = cl::persistent_refusal(coop != 0, smem, static_cast<size_t>(dynamic_limit),
                                     per_sm, plan->blocks_x, sms);
  }
  if (!refusal) {
    const int64_t resident = static_cast<int64_t>(per_sm) * sms;
    const int64_t forced_y = forced.blocks_y.load();
    const int64_t want_y =
        forced_y > 0 ? std::min(forced_y, std::max<int64_t>(1, resident / plan->blocks_x))
                     : cl::persistent_blocks_y(batch, plan->blocks_x, resident);
    plan->persistent = true;
    plan->rows_per_block = cl::ceil_div(batch, want_y);
    plan->blocks_y = cl::ceil_div(batch, plan->rows_per_block);  // no empty chunk
    plan->smem_bytes = smem;
    plan->reason = "persistent: every block and its weight slice fit on the device";
  } else {
    if (path == CudaPath::kPersistent) {
      plan->reason = refusal;
      return cudaErrorNotSupported;
    }
    plan->slice_width = cl::slice_width(units, sms);
    plan->blocks_x = cl::ceil_div(units, plan->slice_width);
    plan->rows_per_block = cl::step_rows_per_block(batch, plan->blocks_x, sms);
    plan->blocks_y = cl::ceil_div(batch, plan->rows_per_block);
    plan->reason = std::string("per-step: ") + refusal;
  }
  plan->warps_per_row = cl::warps_per_row(plan->rows_per_block);
  return cudaSuccess;
}

// The persistent kernel's cooperative launch. If the runtime refuses it on the auto path
// (fewer blocks fit than the occupancy query said), it was refused before it ran, so nothing
// is written yet: re-plans for the per-step kernels, and plan->persistent comes back false.
template <typename Acc, typename Args>
int launch_persistent(void (*kernel)(Args), int64_t batch, int64_t units, CudaPath path,
                      cudaStream_t stream, CudaLaunchPlan* plan, Args* a) {
  const dim3 grid(static_cast<unsigned>(plan->blocks_x), static_cast<unsigned>(plan->blocks_y));
  const int rc = launch_cooperative(kernel, grid, plan->smem_bytes, stream, *a);
  if (rc != cudaErrorCooperativeLaunchTooLarge || path == CudaPath::kPersistent) return rc;
  CHECK_CUDA(plan_launch<Acc>(reinterpret_cast<const void*>(kernel), batch, units,
                              CudaPath::kPerStep, plan));
  plan->reason = "per-step: the runtime refused the cooperative launch";
  a->slice = plan->slice_width;
  a->kw = plan->warps_per_row;
  a->rows_per_block = plan->rows_per_block;
  return cudaSuccess;
}

}  // namespace gategru::cuda_detail
