// CUDA kernels of detops::fpn_upsample_add and its backward: one thread per output element
// (forward) or per top element (backward, gathering its output window: no atomics).
// Threads run along the fastest-varying (width) axis, so loads and stores coalesce.
#include <detops/dispatch.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <detops/cuda_launch.cuh>

#include "upsample_checks.h"
#include "upsample_math.h"

namespace detops::fpn::cuda {
namespace {

using torch::stable::Tensor;

template <typename S>
__global__ void forward_kernel(const S* __restrict__ top, const S* __restrict__ lateral,
                               S* __restrict__ out, int64_t total, int64_t th, int64_t tw,
                               int64_t oh, int64_t ow) {
  DETOPS_CUDA_LOOP(i, total) {
    const int64_t x = i % ow;
    const int64_t y = (i / ow) % oh;
    const int64_t plane = i / (ow * oh);
    const int64_t src = (plane * th + nearest_source(y, th, oh)) * tw + nearest_source(x, tw, ow);
    out[i] = static_cast<S>(static_cast<acc_t<S>>(lateral[i]) + static_cast<acc_t<S>>(top[src]));
  }
}

template <typename S>
__global__ void backward_kernel(const S* __restrict__ grad, S* __restrict__ grad_top, int64_t total,
                                int64_t th, int64_t tw, int64_t oh, int64_t ow) {
  DETOPS_CUDA_LOOP(i, total) {
    const int64_t tx = i % tw;
    const int64_t ty = (i / tw) % th;
    const int64_t plane = i / (tw * th);
    int64_t y_lo, y_hi, x_lo, x_hi;
    source_window(ty, th, oh, &y_lo, &y_hi);
    source_window(tx, tw, ow, &x_lo, &x_hi);
    const S* g = grad + plane * oh * ow;
    acc_t<S> sum = 0;
    for (int64_t y = y_lo; y < y_hi; ++y) {
      for (int64_t x = x_lo; x < x_hi; ++x) sum += static_cast<acc_t<S>>(g[y * ow + x]);
    }
    grad_top[i] = static_cast<S>(sum);
  }
}

Tensor upsample_add_cuda(Tensor top, Tensor lateral) {
  const char* op = "detops.fpn_upsample_add";
  check_upsample_add(op, top, lateral);
  detops::cuda::DeviceGuard guard(top.get_device_index());
  const Tensor t = torch::stable::contiguous(top);
  const Tensor l = torch::stable::contiguous(lateral);
  Tensor out = torch::stable::new_empty(l, {l.size(0), l.size(1), l.size(2), l.size(3)});
  const int64_t total = out.numel();
  if (total == 0) return out;
  const detops::cuda::Shape shape = detops::cuda::over(total, detops::cuda::current_stream(t));
  dispatch_floating(t.scalar_type(), op, "top", [&](auto tag) {
    using S = typename decltype(tag)::type;
    detops::cuda::launch<forward_kernel<S>>(op, shape, t.const_data_ptr<S>(), l.const_data_ptr<S>(),
                                            out.mutable_data_ptr<S>(), total, t.size(2), t.size(3),
                                            l.size(2), l.size(3));
  });
  return out;
}

Tensor upsample_add_backward_cuda(Tensor grad, int64_t top_height, int64_t top_width) {
  const char* op = "detops._fpn_upsample_add_backward";
  check_upsample_add_backward(op, grad, top_height, top_width);
  detops::cuda::DeviceGuard guard(grad.get_device_index());
  const Tensor g = torch::stable::contiguous(grad);
  // Every top element that some output reads is written below; only an empty `grad` (no
  // output reads anything) needs an explicit zero fill.
  if (g.numel() == 0) {
    return torch::stable::new_zeros(g, {g.size(0), g.size(1), top_height, top_width});
  }
  Tensor grad_top = torch::stable::new_empty(g, {g.size(0), g.size(1), top_height, top_width});
  const int64_t total = grad_top.numel();
  if (total == 0) return grad_top;
  const detops::cuda::Shape shape = detops::cuda::over(total, detops::cuda::current_stream(g));
  dispatch_floating(g.scalar_type(), op, "grad", [&](auto tag) {
    using S = typename decltype(tag)::type;
    detops::cuda::launch<backward_kernel<S>>(op, shape, g.const_data_ptr<S>(),
                                             grad_top.mutable_data_ptr<S>(), total, top_height,
                                             top_width, g.size(2), g.size(3));
  });
  return grad_top;
}

}  // namespace
}  // namespace detops::fpn::cuda

DETOPS_CUDA_LIBRARY_IMPL(m) {
  m.impl("fpn_upsample_add", TORCH_BOX(&detops::fpn::cuda::upsample_add_cuda));
  m.impl("_fpn_upsample_add_backward", TORCH_BOX(&detops::fpn::cuda::upsample_add_backward_cuda));
}
