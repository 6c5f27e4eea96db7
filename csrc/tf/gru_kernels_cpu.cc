// CPU launchers: the core kernels on TensorFlow's intra-op thread pool.
#include "../core/gru_cpu.h"
#include "absl/synchronization/blocking_counter.h"
#include "gru_op_kernels.h"
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

template <typename T>
struct Launcher<CPUDevice, T> {
  static void forward(tensorflow::OpKernelContext* ctx, const GruForwardParams<T>& p) {
    gru_forward_cpu(p, TfWorkers(ctx));
  }
  static void backward(tensorflow::OpKernelContext* ctx, const GruBackwardParams<T>& p) {
    gru_backward_cpu(p, TfWorkers(ctx));
  }
};

#define GATEGRU_REGISTER_CPU(T)                                                          \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("GateGruForward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),      \
      GateGruForwardOp<CPUDevice, T>);                                                   \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("GateGruBackward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),     \
      GateGruBackwardOp<CPUDevice, T>);
GATEGRU_REGISTER_CPU(float)
GATEGRU_REGISTER_CPU(double)
#undef GATEGRU_REGISTER_CPU

}  // namespace gategru
