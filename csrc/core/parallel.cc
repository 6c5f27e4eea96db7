#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define GATEGRU_PAUSE() _mm_pause()
#else
#define GATEGRU_PAUSE() ((void)0)
#endif

namespace gategru {
namespace {

// A waiter spins this long, then sleeps. Spinning keeps the barrier at a few microseconds
// when every worker has a core; sleeping frees the core when one does not (another
// process, a busy thread pool), so that the worker being waited for can run on it.
constexpr auto kSpinFor = std::chrono::microseconds(50);

// Counts finished chunks; wait_for(n) returns once n are done.
class Progress {
 public:
  void finish(int64_t count) {
    done_.fetch_add(count, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_.notify_all();
    }
  }

  void wait_for(int64_t needed) {
    if (done_.load(std::memory_order_acquire) >= needed) return;
    const auto until = std::chrono::steady_clock::now() + kSpinFor;
    for (int spins = 1;; ++spins) {
      GATEGRU_PAUSE();
      if (done_.load(std::memory_order_acquire) >= needed) return;
      if (spins % 64 == 0 && std::chrono::steady_clock::now() > until) break;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    // seq_cst pairs with finish(): either it sees this sleeper, or this sees its count.
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    wake_.wait(lock, [&] { return done_.load(std::memory_order_seq_cst) >= needed; });
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  std::atomic<int64_t> done_{0};
  std::atomic<int> sleepers_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
};

// One worker's share of every stage: chunks [begin, end). `claimed` counts the claims on
// this share over all stages, so stage s owns claims [s·size, (s+1)·size).
struct alignas(64) Share {
  int64_t begin = 0, end = 0;
  std::atomic<int64_t> claimed{0};

  int64_t size() const { return end - begin; }
  // A chunk of stage s not yet claimed, or -1. Nobody claims stage s+1's chunks before
  // every chunk of stage s has finished, so `claimed` is at least s·size here.
  int64_t claim(int64_t stage) {
    const int64_t last = (stage + 1) * size();
    int64_t k = claimed.load(std::memory_order_relaxed);
    while (k < last)
      if (claimed.compare_exchange_weak(k, k + 1, std::memory_order_relaxed))
        return begin + (k - stage * size());
    return -1;
  }
};

}  // namespace

void run_staged(const Workers& workers, int64_t stages, int64_t chunks,
                const std::function<void(int64_t, int64_t)>& fn) {
  if (stages <= 0 || chunks <= 0) return;
  const int n = static_cast<int>(std::min<int64_t>(workers.concurrency(), chunks));
  if (n <= 1) {
    for (int64_t s = 0; s < stages; ++s)
      for (int64_t c = 0; c < chunks; ++c) fn(s, c);
    return;
  }
  // Worker i gets the same contiguous chunks every stage, so the slice of the recurrent
  // kernel they read stays in its core's cache; a worker that runs out takes chunks from
  // the others' shares of the same stage (and does all of them if they never start).
  std::vector<Share> shares(n);
  for (int i = 0; i < n; ++i) {
    shares[i].begin = chunks * i / n;
    shares[i].end = chunks * (i + 1) / n;
  }
  Progress progress;
  workers.run(n, [&](int me) {
    for (int64_t s = 0; s < stages; ++s) {
      int64_t done = 0;  // reported once per stage: one contended write, not one per chunk
      for (int i = 0; i < n; ++i) {
        Share& share = shares[(me + i) % n];
        for (int64_t c = share.claim(s); c >= 0; c = share.claim(s), ++done) fn(s, c);
      }
      if (done > 0) progress.finish(done);
      progress.wait_for((s + 1) * chunks);
    }
  });
}

}  // namespace gategru
