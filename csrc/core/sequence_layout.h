// Indexing and work splitting shared by the CPU forward and backward kernels: where a
// (row, step) lives, which steps are masked, which tensor holds the state a step starts
// from, and how a step is cut into chunks for the workers.
#pragma once
#include <cstdint>

namespace gategru {
namespace {  // internal linkage: see gate_math.h

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Workers keep their share of the recurrent kernel in their own cache and meet at a
// barrier of a fraction of a microsecond, so two threads paid off (1.6-2.2×) down to
// batch 1 × 48 units in our measurements; below ~4k multiply-adds a step, the barrier
// is most of the step.
inline bool worth_threads(int64_t batch, int64_t units) {
  return batch * 3 * units * units >= (int64_t{1} << 12);
}

// Forward calls of at most 16 rows × steps may read the weights row by row
// (row_stream_product), into a (2, B, product_row) buffer the dispatcher provides; the
// kernel decides which do (ForwardKernel::rows_streamable).
constexpr int64_t kStreamedRowSteps = 16;
inline bool may_stream_rows(int64_t batch, int64_t time) {
  return batch * time <= kStreamedRowSteps;
}

// A row of that buffer: 3H sums and 64 bytes more. Rows a multiple of 4 KB apart (H = 1024)
// share their addresses' low 12 bits, and the CPU then takes a load from one row for a
// read of the store just made to another (4K aliasing): 8 rows, AVX2, 3.1 against 1.1 ms.
template <typename T>
constexpr int64_t product_row(int64_t units) {
  return 3 * units + int64_t{64 / sizeof(T)};
}

// A chunk is a range of row groups × one block of `lanes` units. Chunk numbers go unit
// block by unit block, so a worker's contiguous share is a slice of the recurrent kernel,
// which stays in its cache. Rows are split too, for two reasons: with few unit blocks to
// go round, and because a step ends when its last chunk does: while one worker finishes
// it, the others wait at the barrier. With 4 chunks per worker that wait was 1.5-4.5% of
// the workers' time at S3; with 64 it was 0.6-1.8%.
struct Blocking {
  int64_t unit_blocks, row_groups, groups_per_chunk, row_chunks;
  int64_t chunks() const { return unit_blocks * row_chunks; }
  int64_t unit_block(int64_t chunk) const { return chunk / row_chunks; }
  int64_t row_chunk(int64_t chunk) const { return chunk % row_chunks; }
};

// Below this many multiply-adds (about a microsecond of one core), claiming a chunk
// costs a noticeable part of it.
constexpr int64_t kMinChunkMacs = int64_t{1} << 16;

inline Blocking choose_blocking(int64_t batch, int64_t units, int64_t lanes, int64_t rows_per_group,
                                int workers) {
  Blocking b{};
  b.unit_blocks = ceil_div(units, lanes);
  b.row_groups = ceil_div(batch, rows_per_group);
  const int64_t wanted = workers > 1 ? 64 * int64_t{workers} : 1;
  const int64_t group_macs = rows_per_group * 3 * lanes * units;
  const int64_t min_groups = ceil_div(kMinChunkMacs, group_macs);
  b.row_chunks = min64(ceil_div(b.row_groups, min_groups), ceil_div(wanted, b.unit_blocks));
  b.row_chunks = max64(1, min64(b.row_groups, b.row_chunks));
  b.groups_per_chunk = ceil_div(b.row_groups, b.row_chunks);
  b.row_chunks = ceil_div(b.row_groups, b.groups_per_chunk);
  return b;
}

// First unmasked step of every row (time if none); the caller owns the buffer.
inline void find_first_valid(const bool* mask, int64_t batch, int64_t time, int64_t* first) {
  for (int64_t r = 0; r < batch; ++r) {
    int64_t s = 0;
    if (mask)
      while (s < time && !mask[r * time + s]) ++s;
    first[r] = s;
  }
}

template <typename T>
struct SequenceLayout {
  int64_t batch, time, units;
  const bool* mask;
  const T* h0;
  const T* h_seq;
  const int64_t* first_valid;

  bool valid(int64_t b, int64_t t) const { return !mask || mask[b * time + t]; }
  int64_t row(int64_t b, int64_t t) const { return b * time + t; }
  // The state step t starts from: h0 until the row's first unmasked step has run, then
  // the previous output (equal to the state from there on).
  const T* h_prev(int64_t b, int64_t t) const {
    return t > first_valid[b] ? h_seq + (row(b, t) - 1) * units : h0 + b * units;
  }
  // What a masked step outputs: the previous output, or 0 before any unmasked step.
  const T* carried_output(int64_t b, int64_t t) const {
    return t > first_valid[b] ? h_seq + (row(b, t) - 1) * units : nullptr;
  }
};

}  // namespace
}  // namespace gategru
