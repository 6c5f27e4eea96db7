#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define GATEGRU_PAUSE() _mm_pause()
#else
#define GATEGRU_PAUSE() ((void)0)
#endif

namespace gategru {

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
  std::atomic<int64_t> done{0};
  workers.run(n, [&](int) {
    for (;;) {
      const int64_t k = next.fetch_add(1, std::memory_order_relaxed);
      if (k >= total) return;
      const int64_t stage = k / chunks;
      const int64_t needed = stage * chunks;  // every chunk of the earlier stages
      // Every index below k is already claimed by a running worker, so this ends.
      for (int spins = 0; done.load(std::memory_order_acquire) < needed; ++spins) {
        if (spins < 4096) {
          GATEGRU_PAUSE();
        } else {
          std::this_thread::yield();  // oversubscribed: let the worker we wait for run
        }
      }
      fn(stage, k - needed);
      done.fetch_add(1, std::memory_order_release);
    }
  });
}

}  // namespace gategru
