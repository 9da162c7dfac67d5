// CUDA kernels of detops::generalized_box_iou_loss, distance_box_iou_loss,
// complete_box_iou_loss and their backward ops.
//
// loss_kernel and backward_kernel: one thread per pair, grid-stride (one writer per pair).
// The reductions follow box_iou_loss_entry.h's order without atomics: chunk_kernel gives
// each chunk of kReduceChunk losses one thread that adds them in turn in double, and
// total_kernel (one thread) adds the chunks' sums in order, so the emulated kernels equal
// the CPU's bit for bit. The per-pair math is core's box_pair_math.h; CUDA's atan may
// differ from the C library's in the last place.
#include <detops/dispatch.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <detops/cuda_launch.cuh>

#include "box_iou_loss_entry.h"

namespace detops::box_iou_loss::cuda {
namespace {

using detops::box_pair::PairGrad;
using detops::box_pair::Terms;
using torch::stable::Tensor;

template <Measure M, typename S, typename T>
__device__ __host__ inline Terms<T> load(const S* b) {
  return detops::box_pair::terms<T>(static_cast<T>(b[0]), static_cast<T>(b[1]),
                                    static_cast<T>(b[2]), static_cast<T>(b[3]),
                                    M == Measure::kCiou);
}

template <typename S, typename T>
__device__ __host__ inline void store(S* out, const detops::box_pair::Box<T>& g) {
  out[0] = static_cast<S>(g.x1);
  out[1] = static_cast<S>(g.y1);
  out[2] = static_cast<S>(g.x2);
  out[3] = static_cast<S>(g.y2);
}

template <Measure M, typename S, typename T>
__global__ void loss_kernel(const S* __restrict__ boxes1, const S* __restrict__ boxes2, int64_t k,
                            T eps, T* __restrict__ out) {
  DETOPS_CUDA_LOOP(i, k) {
    out[i] = detops::box_pair::loss_value<M>(load<M, S, T>(boxes1 + 4 * i),
                                             load<M, S, T>(boxes2 + 4 * i), eps);
  }
}

template <typename T>
__global__ void chunk_kernel(const T* __restrict__ values, int64_t k, int64_t count,
                             double* __restrict__ partials) {
  DETOPS_CUDA_LOOP(c, count) {
    double sum = 0.0;
    const int64_t last = min(k, (c + 1) * kReduceChunk);
    for (int64_t i = c * kReduceChunk; i < last; ++i) sum += static_cast<double>(values[i]);
    partials[c] = sum;
  }
}

template <typename T>
__global__ void total_kernel(const double* __restrict__ partials, int64_t count, T divisor,
                             T* __restrict__ out) {
  DETOPS_CUDA_LOOP(t, 1) {
    double total = 0.0;
    for (int64_t c = 0; c < count; ++c) total += partials[c];
    out[0] = static_cast<T>(total / static_cast<double>(divisor));
  }
}

template <Measure M, typename S, typename T>
__global__ void backward_kernel(const T* __restrict__ grad, const S* __restrict__ boxes1,
                                const S* __restrict__ boxes2, int64_t k, T eps, bool per_element,
                                T divisor, S* __restrict__ grad1, S* __restrict__ grad2) {
  DETOPS_CUDA_LOOP(i, k) {
    const T g = per_element ? grad[i] : grad[0] / divisor;
    const PairGrad<T> pg = detops::box_pair::loss_grad<M>(load<M, S, T>(boxes1 + 4 * i),
                                                          load<M, S, T>(boxes2 + 4 * i), eps, g);
    store(grad1 + 4 * i, pg.a);
    store(grad2 + 4 * i, pg.b);
  }
}

const char* op_name(Measure M) {
  return M == Measure::kGiou   ? "detops.generalized_box_iou_loss"
         : M == Measure::kDiou ? "detops.distance_box_iou_loss"
                               : "detops.complete_box_iou_loss";
}

struct BoxIouLossBackend : detops::CudaBackend {
  template <Measure M, typename S>
  static void losses(const Tensor& boxes1, const Tensor& boxes2, acc_t<S> eps, Tensor& out) {
    using T = acc_t<S>;
    const int64_t k = out.numel();
    cudaStream_t stream = detops::cuda::current_stream(boxes1);
    detops::cuda::launch<loss_kernel<M, S, T>>(
        op_name(M), detops::cuda::over(k, stream), boxes1.const_data_ptr<S>(),
        boxes2.const_data_ptr<S>(), k, eps, out.mutable_data_ptr<T>());
  }

  template <typename T>
  static void reduce(const Tensor& values, Tensor& partials, T divisor, Tensor& out) {
    const char* op = "detops box IoU loss reduction";
    const int64_t k = values.numel(), count = partials.numel();
    cudaStream_t stream = detops::cuda::current_stream(values);
    double* p = partials.mutable_data_ptr<double>();
    detops::cuda::launch<chunk_kernel<T>>(op, detops::cuda::over(count, stream),
                                          values.const_data_ptr<T>(), k, count, p);
    detops::cuda::launch<total_kernel<T>>(op, detops::cuda::over(1, stream), p, count, divisor,
                                          out.mutable_data_ptr<T>());
  }

  template <Measure M, typename S>
  static void backward(const Tensor& grad, const Tensor& boxes1, const Tensor& boxes2, acc_t<S> eps,
                       bool per_element, acc_t<S> divisor, Tensor& grad1, Tensor& grad2) {
    using T = acc_t<S>;
    const int64_t k = boxes1.numel() / 4;
    cudaStream_t stream = detops::cuda::current_stream(boxes1);
    detops::cuda::launch<backward_kernel<M, S, T>>(
        op_name(M), detops::cuda::over(k, stream), grad.const_data_ptr<T>(),
        boxes1.const_data_ptr<S>(), boxes2.const_data_ptr<S>(), k, eps, per_element, divisor,
        grad1.mutable_data_ptr<S>(), grad2.mutable_data_ptr<S>());
  }
};

}  // namespace
}  // namespace detops::box_iou_loss::cuda

DETOPS_CUDA_LIBRARY_IMPL(m) {
  using Entry =
      detops::box_iou_loss::BoxIouLossEntry<detops::box_iou_loss::cuda::BoxIouLossBackend>;
  m.impl("generalized_box_iou_loss", TORCH_BOX(&Entry::generalized_box_iou_loss));
  m.impl("distance_box_iou_loss", TORCH_BOX(&Entry::distance_box_iou_loss));
  m.impl("complete_box_iou_loss", TORCH_BOX(&Entry::complete_box_iou_loss));
  m.impl("_generalized_box_iou_loss_backward",
         TORCH_BOX(&Entry::generalized_box_iou_loss_backward));
  m.impl("_distance_box_iou_loss_backward", TORCH_BOX(&Entry::distance_box_iou_loss_backward));
  m.impl("_complete_box_iou_loss_backward", TORCH_BOX(&Entry::complete_box_iou_loss_backward));
}
