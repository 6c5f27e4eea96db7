// Indexing shared by the CPU forward and backward kernels: where a (row, step) lives,
// which steps are masked, and which tensor holds the state a step starts from.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace gategru {

constexpr int64_t kMaxUnitBlock = 64;

// Splits work into (row block × unit block) chunks.
struct Blocking {
  int64_t row_block, unit_block, row_blocks, unit_blocks;
  int64_t chunks() const { return row_blocks * unit_blocks; }
};

// Unit blocks of at most 64 keep three accumulator rows on the stack; enough chunks
// to give every worker work, but not so many that the per-chunk overhead shows.
inline Blocking choose_blocking(int64_t batch, int64_t units, int workers) {
  Blocking b{};
  const int64_t min_unit_blocks = (units + kMaxUnitBlock - 1) / kMaxUnitBlock;
  const int64_t wanted = std::max<int64_t>(1, 2 * static_cast<int64_t>(workers));
  b.unit_blocks = std::max(min_unit_blocks, std::min<int64_t>(wanted, (units + 15) / 16));
  b.unit_block = (units + b.unit_blocks - 1) / b.unit_blocks;
  b.unit_blocks = (units + b.unit_block - 1) / b.unit_block;
  b.row_blocks = std::max<int64_t>(1, std::min<int64_t>(batch, wanted / b.unit_blocks));
  b.row_block = (batch + b.row_blocks - 1) / b.row_blocks;
  b.row_blocks = (batch + b.row_block - 1) / b.row_block;
  return b;
}

template <typename T>
struct SequenceLayout {
  int64_t batch, time, units;
  const bool* mask;
  const T* h0;
  const T* h_seq;
  std::vector<int64_t> first_valid;  // first unmasked step of each row (time if none)

  SequenceLayout(int64_t b, int64_t t, int64_t u, const bool* m, const T* h0_, const T* hs)
      : batch(b), time(t), units(u), mask(m), h0(h0_), h_seq(hs), first_valid(b, 0) {
    if (!mask) return;
    for (int64_t r = 0; r < batch; ++r) {
      int64_t s = 0;
      while (s < time && !mask[r * time + s]) ++s;
      first_valid[r] = s;
    }
  }
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

}  // namespace gategru
