// Scratch memory for the CPU kernels, kept per thread between calls (gru_cpu.cc).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>

namespace gategru {
namespace {

// One call's scratch memory: the thread's kept block when it is free and big enough,
// else a block of its own. Fresh memory costs a page fault per 4 KB at its first write,
// and glibc gives freed blocks of this size back to the OS, so every call faulted its
// workspace in again: B = 1, T = 3, H = 256 took 700 µs at the median, 100-160 with the
// block kept (C++ driver, two threads). Blocks start on a cache line, so that a 64-byte
// vector load of a packed panel is one line, not two.
class Scratch {
 public:
  explicit Scratch(int64_t bytes) {
    Kept& kept = thread_kept();
    if (kept.in_use || bytes > kKeepAtMost) {  // in use: a call made from inside a call
      own_.reset(allocate(bytes));
      data_ = own_.get();
      return;
    }
    if (kept.bytes < bytes) {
      kept.block.reset();  // before allocating: no two blocks at once
      kept.bytes = 0;
      kept.block.reset(allocate(bytes));
      kept.bytes = bytes;
    }
    kept.in_use = true;
    data_ = kept.block.get();
    kept_ = &kept;
  }
  ~Scratch() {
    if (kept_) kept_->in_use = false;
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  std::byte* data() const { return data_; }

 private:
  static constexpr std::align_val_t kLine{64};
  static constexpr int64_t kKeepAtMost = int64_t{64} << 20;  // H = 2048's panels fit
  struct Free {
    void operator()(std::byte* p) const { ::operator delete[](p, kLine); }
  };
  using Block = std::unique_ptr<std::byte[], Free>;
  struct Kept {
    Block block;
    int64_t bytes = 0;
    bool in_use = false;
  };
  static Kept& thread_kept() {
    thread_local Kept kept;
    return kept;
  }
  static std::byte* allocate(int64_t bytes) {
    return static_cast<std::byte*>(::operator new[](bytes > 0 ? bytes : 1, kLine));
  }

  Block own_;
  std::byte* data_ = nullptr;
  Kept* kept_ = nullptr;
};

// Carves a call's buffers out of one Scratch, each on a cache line; without a base, it
// only adds up their sizes.
class Carving {
 public:
  explicit Carving(std::byte* base = nullptr) : base_(base) {}
  template <typename U>
  U* take(int64_t count) {
    if (count <= 0) return nullptr;
    U* p = base_ ? reinterpret_cast<U*>(base_ + used_) : nullptr;
    used_ += (count * static_cast<int64_t>(sizeof(U)) + 63) / 64 * 64;
    return p;
  }
  template <typename U>
  U* take_zeroed(int64_t count) {
    U* p = take<U>(count);
    if (p) std::memset(p, 0, count * sizeof(U));
    return p;
  }
  int64_t used() const { return used_; }

 private:
  std::byte* base_ = nullptr;
  int64_t used_ = 0;
};

}  // namespace
}  // namespace gategru
