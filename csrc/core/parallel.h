// Framework-free parallel loop for the CPU kernels: the TF glue and the pybind11 module
// each supply a Workers that runs closures on their own threads.
#pragma once
#include <cstdint>
#include <functional>

namespace gategru {

class Workers {
 public:
  virtual ~Workers() = default;
  // How many closures may usefully run at once (the calling thread included).
  virtual int concurrency() const = 0;
  // Runs fn(0..n-1), possibly concurrently, and returns when all have finished.
  // Implementations need not start them all at once: run_staged never waits on a
  // closure that has not started.
  virtual void run(int n, const std::function<void(int)>& fn) const = 0;
};

class SerialWorkers final : public Workers {
 public:
  int concurrency() const override { return 1; }
  void run(int n, const std::function<void(int)>& fn) const override {
    for (int i = 0; i < n; ++i) fn(i);
  }
};

// Calls fn(stage, chunk) for every stage in [0, stages) and chunk in [0, chunks), with
// every chunk of a stage finished before any chunk of the next one starts (one cheap
// barrier per stage). Each worker starts on its own fixed share of the chunks and then
// helps with the others' shares, so a worker that starts late only helps, and the loop
// cannot deadlock on a busy thread pool.
void run_staged(const Workers& workers, int64_t stages, int64_t chunks,
                const std::function<void(int64_t stage, int64_t chunk)>& fn);

}  // namespace gategru
