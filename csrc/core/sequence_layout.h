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

// A chunk is a range of row groups × one block of `lanes` units. Unit blocks come first
// (each worker's slice of the recurrent kernel stays in its cache); rows are split only
// when there are too few unit blocks to go round.
struct Blocking {
  int64_t unit_blocks, row_groups, groups_per_chunk, row_chunks;
  int64_t chunks() const { return unit_blocks * row_chunks; }
};

inline Blocking choose_blocking(int64_t batch, int64_t units, int64_t lanes, int64_t rows_per_group,
                                int workers) {
  Blocking b{};
  b.unit_blocks = ceil_div(units, lanes);
  b.row_groups = ceil_div(batch, rows_per_group);
  const int64_t wanted = workers > 1 ? 4 * int64_t{workers} : 1;
  b.row_chunks = min64(b.row_groups, max64(1, ceil_div(wanted, b.unit_blocks)));
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
