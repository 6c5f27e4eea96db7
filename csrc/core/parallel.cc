#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

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
  void finish_one() {
    done_.fetch_add(1, std::memory_order_seq_cst);
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
    // seq_cst pairs with finish_one: either it sees this sleeper, or this sees its count.
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
  const int64_t total = stages * chunks;
  std::atomic<int64_t> next{0};
  Progress progress;
  workers.run(n, [&](int) {
    for (;;) {
      const int64_t k = next.fetch_add(1, std::memory_order_relaxed);
      if (k >= total) return;
      const int64_t stage = k / chunks;
      const int64_t needed = stage * chunks;  // every chunk of the earlier stages
      // Every index below k is already claimed by a running worker, so this ends.
      progress.wait_for(needed);
      fn(stage, k - needed);
      progress.finish_one();
    }
  });
}

}  // namespace gategru
