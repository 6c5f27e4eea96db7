// Launch choices of the CUDA GRU kernels, one named function each with its reason.
// Plain C++ (the host side of gru_forward.cu / gru_backward.cu uses it; so may tests).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace gategru::cuda_launch {

// 8 warps: enough to split a short dot product (small batch) eight ways and to hide L2
// latency behind other warps, few enough for one block per SM at 255 registers.
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Units per block (W): 3 gates × 8 units × 2 rows = 48 accumulators stay in registers.
constexpr int kSliceMax = 8;
// Batch rows a warp computes together: each weight read from shared memory feeds 2 rows.
constexpr int kRowsPerWarp = 2;
// k steps whose activation loads are issued before their first use (hides L2 latency);
// divided by the values loaded per k (block_product).
constexpr int kKUnroll = 4;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Per-step path, units per block: spread the units over every SM, but at most kSliceMax.
inline int slice_width(int64_t units, int sm_count) {
  return static_cast<int>(std::clamp<int64_t>(ceil_div(units, std::max(sm_count, 1)), 1,
                                              kSliceMax));
}

// Persistent kernel, units per block: the widest slice. A block's product and warp sums
// are kSliceMax units wide whatever its width (on an H200, 16 eight-unit blocks and 128
// one-unit blocks tie at B = 1: docs/gpu_performance.md), so wider slices only mean fewer
// blocks, and SMs left over for splitting the batch (persistent_blocks_y).
inline int persistent_slice_width(int64_t units) {
  return static_cast<int>(std::clamp<int64_t>(units, 1, kSliceMax));
}

// Persistent kernel, batch chunks (grid.y): every block slot the device can hold at once,
// down to one row group (kRowsPerWarp rows) per block. Each chunk is one more block at the
// barrier, but fewer rows per block mean fewer passes over the slice per step and more
// warps sharing each dot product (warps_per_row): per-step latency is what the sequence
// waits on.
inline int64_t persistent_blocks_y(int64_t batch, int64_t blocks_x, int64_t resident_blocks) {
  const int64_t room = std::max<int64_t>(1, resident_blocks / std::max<int64_t>(blocks_x, 1));
  return std::clamp<int64_t>(ceil_div(batch, kRowsPerWarp), 1, room);
}

// Warps splitting one row group's k range: with fewer row groups than warps (small
// batches) the spare warps shorten each dot product instead of idling. A power of two.
inline int warps_per_row(int64_t rows) {
  const int64_t groups = ceil_div(std::max<int64_t>(rows, 1), kRowsPerWarp);
  int slots = 1;
  while (slots < kWarps && slots < groups) slots *= 2;
  return kWarps / slots;
}

// Shared-memory row (one k) of a weight slice: 3 gates × kSliceMax units, padded by 16
// bytes so that 8 lanes reading 16 bytes at consecutive k hit 8 distinct bank groups.
// (Variables, not functions: device code reads them too.)
template <typename T>
inline constexpr int64_t kWeightRowStride = 3 * kSliceMax + static_cast<int64_t>(16 / sizeof(T));

// Partial sums of every warp, meeting in shared memory (at most 3 gates).
template <typename T>
inline constexpr size_t kReduceSmemBytes =
    size_t{kWarps} * kRowsPerWarp * 3 * kSliceMax * sizeof(T);

// The persistent kernels keep a units × (3·kSliceMax) weight slice resident.
template <typename T>
size_t persistent_smem_bytes(int64_t units) {
  return static_cast<size_t>(units * kWeightRowStride<T>) * sizeof(T) + kReduceSmemBytes<T>;
}

// Why the persistent kernel cannot run (null: it can). Every block must be resident at
// once for the grid barrier; cooperative launch checks that, we check it first.
inline const char* persistent_refusal(bool cooperative, size_t smem, size_t smem_optin,
                                      int blocks_per_sm, int64_t blocks, int sm_count) {
  if (!cooperative) return "the device cannot launch cooperative kernels";
  if (smem > smem_optin) return "the weight slice does not fit in one block's shared memory";
  if (static_cast<int64_t>(blocks_per_sm) * sm_count < blocks)
    return "not every block can be resident at once (grid barrier impossible)";
  return nullptr;
}

// A benchmark's override of the persistent kernel's launch shape (0: the heuristic),
// process-wide, for tuning sweeps on a new GPU (bench/gpu_device_check.py --sweep).
struct PersistentOverride {
  std::atomic<int> slice_width{0};
  std::atomic<int64_t> blocks_y{0};
};
inline PersistentOverride& persistent_override() {
  static PersistentOverride o;
  return o;
}

// Per-step path: split the batch over grid.y until there are about two blocks per SM, but
// keep at least one full row group per warp slot per block so weight loads are shared.
inline int64_t step_rows_per_block(int64_t batch, int64_t blocks_x, int sm_count) {
  const int64_t want_y = std::max<int64_t>(1, ceil_div(2 * int64_t{sm_count}, blocks_x));
  const int64_t max_y = std::max<int64_t>(1, ceil_div(batch, kWarps * kRowsPerWarp));
  return ceil_div(batch, std::min(want_y, max_y));
}

}  // namespace gategru::cuda_launch
