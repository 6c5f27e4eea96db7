// CPU launchers: the core kernels on TensorFlow's intra-op thread pool.
#include <functional>
#include <list>
#include <type_traits>
#include <vector>

#include "../core/gru_cpu.h"
#include "absl/synchronization/blocking_counter.h"
#include "gru_op_kernels.h"
#include "params_map.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/platform/threadpool.h"

namespace gategru {
namespace {

using CPUDevice = Eigen::ThreadPoolDevice;

class TfWorkers final : public Workers {
 public:
  explicit TfWorkers(tensorflow::OpKernelContext* ctx)
      : threads_(ctx->device()->tensorflow_cpu_worker_threads()) {}
  int concurrency() const override { return threads_->num_threads; }
  void run(int n, const std::function<void(int)>& fn) const override {
    absl::BlockingCounter pending(n > 1 ? n - 1 : 0);
    for (int i = 1; i < n; ++i) {
      threads_->workers->Schedule([&fn, &pending, i] {
        fn(i);
        pending.DecrementCount();
      });
    }
    if (n > 0) fn(0);
    pending.Wait();
  }

 private:
  const tensorflow::DeviceBase::CpuWorkerThreads* threads_;
};

}  // namespace

namespace {

// 16-bit types on the CPU: the float kernels on widened copies, the outputs rounded back.
// For portability (a graph built for a GPU runs here), not speed.
class Widened {
 public:
  template <typename H>
  const float* in(const H* src, int64_t n) {
    if (!src) return nullptr;
    std::vector<float>& buf = buffers_.emplace_back(n);
    for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<float>(src[i]);
    return buf.data();
  }
  template <typename H>
  float* out(H* dst, int64_t n) {
    if (!dst) return nullptr;
    std::vector<float>& buf = buffers_.emplace_back(n);
    narrow_.push_back([dst, n, data = buf.data()] {
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<H>(data[i]);
    });
    return buf.data();
  }
  void finish() {
    for (auto& f : narrow_) f();
  }

 private:
  std::list<std::vector<float>> buffers_;  // a list: growing it moves no buffer
  std::vector<std::function<void()>> narrow_;
};

template <typename Params, typename Run>
void run_widened(const Params& p, Run run) {
  Widened w;
  run(map_params<float>(
      p, [&w](auto* src, int64_t n) { return w.in(src, n); },
      [&w](auto* dst, int64_t n) { return w.out(dst, n); }));
  w.finish();
}

}  // namespace

template <typename T>
struct Launcher<CPUDevice, T> {
  static constexpr bool kNative = std::is_same_v<T, float> || std::is_same_v<T, double>;
  static void forward(tensorflow::OpKernelContext* ctx, const GruForwardParams<T>& p) {
    if constexpr (kNative) {
      gru_forward_cpu(p, TfWorkers(ctx));
    } else {
      run_widened(p, [ctx](const auto& q) { gru_forward_cpu(q, TfWorkers(ctx)); });
    }
  }
  static void backward(tensorflow::OpKernelContext* ctx, const GruBackwardParams<T>& p) {
    if constexpr (kNative) {
      gru_backward_cpu(p, TfWorkers(ctx));
    } else {
      run_widened(p, [ctx](const auto& q) { gru_backward_cpu(q, TfWorkers(ctx)); });
    }
  }
};

#define GATEGRU_REGISTER_CPU(T)                                                          \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("GateGruForward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),      \
      GateGruForwardOp<CPUDevice, T>);                                                   \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("GateGruBackward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),     \
      GateGruBackwardOp<CPUDevice, T>);
GATEGRU_REGISTER_CPU(Eigen::half)
GATEGRU_REGISTER_CPU(Eigen::bfloat16)
GATEGRU_REGISTER_CPU(float)
GATEGRU_REGISTER_CPU(double)
#undef GATEGRU_REGISTER_CPU

}  // namespace gategru
