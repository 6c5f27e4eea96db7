// std::thread Workers for the pybind11 module (TensorFlow supplies its own pool).
#pragma once
#include <thread>
#include <vector>

#include "../core/parallel.h"

namespace gategru {

class ThreadWorkers final : public Workers {
 public:
  explicit ThreadWorkers(int threads)
      : n_(threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency())) {}
  int concurrency() const override { return n_; }
  void run(int n, const std::function<void(int)>& fn) const override {
    std::vector<std::thread> pool;
    pool.reserve(n > 0 ? n - 1 : 0);
    for (int i = 1; i < n; ++i) pool.emplace_back(fn, i);
    if (n > 0) fn(0);
    for (auto& t : pool) t.join();
  }

 private:
  int n_;
};

}  // namespace gategru
