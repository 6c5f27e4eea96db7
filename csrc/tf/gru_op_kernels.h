// GateGru OpKernels: validate, allocate, fill the params, hand them to the device's
// launcher. Nothing here knows how the kernels compute.
#pragma once
#include "../core/gru_params.h"
#include "check_inputs.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace gategru {

// Specialized per device in gru_kernels_cpu.cc / gru_kernels_gpu.cc.
template <typename Device, typename T>
struct Launcher {
  static void forward(tensorflow::OpKernelContext* ctx, const GruForwardParams<T>& p);
  static void backward(tensorflow::OpKernelContext* ctx, const GruBackwardParams<T>& p);
};

template <typename T>
T* allocate(tensorflow::OpKernelContext* ctx, int index, const tensorflow::TensorShape& shape) {
  tensorflow::Tensor* out = nullptr;
  const absl::Status status = ctx->allocate_output(index, shape, &out);
  if (!status.ok()) {
    ctx->SetStatus(status);
    return nullptr;
  }
  return out->flat<T>().data();
}

template <typename Device, typename T>
class GateGruForwardOp : public tensorflow::OpKernel {
 public:
  explicit GateGruForwardOp(tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("reset_after", &reset_after_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("with_gates", &with_gates_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("keep_cache", &keep_cache_));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    SequenceDims d;
    bool has_mask = false, projects = false;
    OP_REQUIRES_OK(ctx, check_forward_inputs(ctx, &d, &has_mask, &projects));
    const tensorflow::TensorShape seq({d.batch, d.time, d.units});
    const tensorflow::TensorShape empty({0, 0, 0});
    GruForwardParams<T> p;
    p.batch = d.batch;
    p.time = d.time;
    p.units = d.units;
    p.reset_after = reset_after_;
    p.set_inputs(ctx->input(0).flat<T>().data(),
                 projects ? ctx->input(5).flat<T>().data() : nullptr,
                 ctx->input(6).flat<T>().data(), d.input_width);
    p.h0 = ctx->input(1).flat<T>().data();
    p.recurrent_kernel = ctx->input(2).flat<T>().data();
    p.recurrent_bias = ctx->input(3).flat<T>().data();
    p.mask = has_mask ? ctx->input(4).flat<bool>().data() : nullptr;
    p.h_seq = allocate<T>(ctx, 0, seq);
    p.h_last = allocate<T>(ctx, 1, tensorflow::TensorShape({d.batch, d.units}));
    p.update = allocate<T>(ctx, 2, with_gates_ ? seq : empty);
    p.reset = allocate<T>(ctx, 3, with_gates_ ? seq : empty);
    p.candidate = allocate<T>(ctx, 4, with_gates_ ? seq : empty);
    const bool cache = with_gates_ && reset_after_ && keep_cache_;
    p.hu_candidate = allocate<T>(ctx, 5, cache ? seq : empty);
    if (!ctx->status().ok()) return;
    if (!with_gates_) p.update = p.reset = p.candidate = p.hu_candidate = nullptr;
    if (!cache) p.hu_candidate = nullptr;
    Launcher<Device, T>::forward(ctx, p);
  }

 private:
  bool reset_after_ = true;
  bool with_gates_ = true;
  bool keep_cache_ = true;
};

template <typename Device, typename T>
class GateGruBackwardOp : public tensorflow::OpKernel {
 public:
  explicit GateGruBackwardOp(tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("reset_after", &reset_after_));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    SequenceDims d;
    bool has_mask = false;
    OP_REQUIRES_OK(ctx, check_backward_inputs(ctx, reset_after_, &d, &has_mask));
    GruBackwardParams<T> p;
    p.batch = d.batch;
    p.time = d.time;
    p.units = d.units;
    p.reset_after = reset_after_;
    p.h0 = ctx->input(0).flat<T>().data();
    p.recurrent_kernel = ctx->input(1).flat<T>().data();
    p.mask = has_mask ? ctx->input(2).flat<bool>().data() : nullptr;
    p.h_seq = ctx->input(3).flat<T>().data();
    p.update = ctx->input(4).flat<T>().data();
    p.reset = ctx->input(5).flat<T>().data();
    p.candidate = ctx->input(6).flat<T>().data();
    p.hu_candidate = reset_after_ ? ctx->input(7).flat<T>().data() : nullptr;
    p.d_h_seq = ctx->input(8).flat<T>().data();
    p.d_h_last = ctx->input(9).flat<T>().data();
    p.d_update = optional_input<T>(ctx, 10);
    p.d_reset = optional_input<T>(ctx, 11);
    p.d_candidate = optional_input<T>(ctx, 12);
    p.d_xw = allocate<T>(ctx, 0, tensorflow::TensorShape({d.batch, d.time, 3 * d.units}));
    p.d_h0 = allocate<T>(ctx, 1, tensorflow::TensorShape({d.batch, d.units}));
    const tensorflow::TensorShape hu({d.batch, d.time, 3 * d.units});
    p.d_hu = allocate<T>(ctx, 2, reset_after_ ? hu : tensorflow::TensorShape({0, 0, 0}));
    if (!ctx->status().ok()) return;
    if (!reset_after_) p.d_hu = nullptr;
    Launcher<Device, T>::backward(ctx, p);
  }

 private:
  bool reset_after_ = true;
};

}  // namespace gategru
