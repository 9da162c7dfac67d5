// CUDA kernels of detops::fpn_upsample_add and its backward: one thread per output element
// (forward) or per top element (backward, gathering its output window: no atomics).
// Threads run along the fastest-varying (width) axis, so loads and stores coalesce.
#include <detops/dispatch.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <detops/cuda_launch.cuh>

#include "upsample_add_entry.h"
#include "upsample_add_math.h"

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

struct UpsampleAddBackend : detops::CudaBackend {
  template <typename S>
  static void forward(const Tensor& like, const S* top, const S* lateral, S* out, int64_t planes,
                      int64_t th, int64_t tw, int64_t oh, int64_t ow) {
    const int64_t total = planes * oh * ow;
    detops::cuda::launch<forward_kernel<S>>(
        "detops.fpn_upsample_add", detops::cuda::over(total, detops::cuda::current_stream(like)),
        top, lateral, out, total, th, tw, oh, ow);
  }

  template <typename S>
  static void backward(const Tensor& like, const S* grad, S* grad_top, int64_t planes, int64_t th,
                       int64_t tw, int64_t oh, int64_t ow) {
    const int64_t total = planes * th * tw;
    detops::cuda::launch<backward_kernel<S>>(
        "detops._fpn_upsample_add_backward",
        detops::cuda::over(total, detops::cuda::current_stream(like)), grad, grad_top, total, th,
        tw, oh, ow);
  }
};

}  // namespace
}  // namespace detops::fpn::cuda

DETOPS_CUDA_LIBRARY_IMPL(m) {
  using Entry = detops::fpn::UpsampleAddEntry<detops::fpn::cuda::UpsampleAddBackend>;
  m.impl("fpn_upsample_add", TORCH_BOX(&Entry::fpn_upsample_add));
  m.impl("_fpn_upsample_add_backward", TORCH_BOX(&Entry::fpn_upsample_add_backward));
}
