// CUDA kernels of detops::generalized_box_iou, distance_box_iou, complete_box_iou and their
// backward ops.
//
// forward_kernel: one thread per (i, j) pair, grid-stride. The backward follows the
// summation order of box_pair_entry.h without atomics: rows_kernel gives each boxes1 box
// one thread that walks its row; column_blocks_kernel gives each (row block, boxes2 box)
// one thread that walks the block's rows into a partial sum; columns_kernel adds each
// boxes2 box's partial sums in block order. The per-pair math is core's box_pair_math.h,
// the CPU kernels' own; CUDA's atan may differ from the C library's in the last place, so
// the devices agree to a few ulps of T, and exactly under the emulation.
#include <detops/dispatch.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <detops/cuda_launch.cuh>

#include "box_pair_entry.h"

namespace detops::nms::box_pair::cuda {
namespace {

using detops::box_pair::Box;
using detops::box_pair::PairGrad;
using detops::box_pair::Terms;
using torch::stable::Tensor;

template <Measure M, typename S, typename T>
__device__ __host__ inline Terms<T> load(const S* b) {
  return detops::box_pair::terms<T>(static_cast<T>(b[0]), static_cast<T>(b[1]),
                                    static_cast<T>(b[2]), static_cast<T>(b[3]),
                                    M == Measure::kCiou);
}

template <typename T>
__device__ __host__ inline void add(Box<T>& acc, const Box<T>& g) {
  acc.x1 += g.x1;
  acc.y1 += g.y1;
  acc.x2 += g.x2;
  acc.y2 += g.y2;
}

template <typename S, typename T>
__device__ __host__ inline void store(S* out, const Box<T>& g) {
  out[0] = static_cast<S>(g.x1);
  out[1] = static_cast<S>(g.y1);
  out[2] = static_cast<S>(g.x2);
  out[3] = static_cast<S>(g.y2);
}

template <Measure M, typename S, typename T>
__global__ void forward_kernel(const S* __restrict__ boxes1, const S* __restrict__ boxes2,
                               int64_t n, int64_t m, T eps, T* __restrict__ out) {
  DETOPS_CUDA_LOOP(k, n * m) {
    const int64_t i = k / m, j = k - i * m;
    out[k] = detops::box_pair::pairwise_value<M, S>(load<M, S, T>(boxes1 + 4 * i),
                                                    load<M, S, T>(boxes2 + 4 * j), eps);
  }
}

// grad1[i] = sum over j in turn.
template <Measure M, typename S, typename T>
__global__ void rows_kernel(const T* __restrict__ grad, const S* __restrict__ boxes1,
                            const S* __restrict__ boxes2, int64_t n, int64_t m, T eps,
                            S* __restrict__ grad1) {
  DETOPS_CUDA_LOOP(i, n) {
    const Terms<T> a = load<M, S, T>(boxes1 + 4 * i);
    Box<T> sum{T(0), T(0), T(0), T(0)};
    for (int64_t j = 0; j < m; ++j) {
      const PairGrad<T> g = detops::box_pair::pairwise_grad<M, S>(a, load<M, S, T>(boxes2 + 4 * j),
                                                                  eps, grad[i * m + j]);
      add(sum, g.a);
    }
    store(grad1 + 4 * i, sum);
  }
}

// partial[block, j] = sum over the block's rows i in turn.
template <Measure M, typename S, typename T>
__global__ void column_blocks_kernel(const T* __restrict__ grad, const S* __restrict__ boxes1,
                                     const S* __restrict__ boxes2, int64_t n, int64_t m,
                                     int64_t blocks, T eps, Box<T>* __restrict__ partial) {
  DETOPS_CUDA_LOOP(k, blocks * m) {
    const int64_t blk = k / m, j = k - blk * m;
    const Terms<T> b = load<M, S, T>(boxes2 + 4 * j);
    const int64_t last = min(n, (blk + 1) * kRowBlock);
    Box<T> sum{T(0), T(0), T(0), T(0)};
    for (int64_t i = blk * kRowBlock; i < last; ++i) {
      const PairGrad<T> g = detops::box_pair::pairwise_grad<M, S>(load<M, S, T>(boxes1 + 4 * i), b,
                                                                  eps, grad[i * m + j]);
      add(sum, g.b);
    }
    partial[k] = sum;
  }
}

// grad2[j] = sum over blocks in turn.
template <typename S, typename T>
__global__ void columns_kernel(const Box<T>* __restrict__ partial, int64_t m, int64_t blocks,
                               S* __restrict__ grad2) {
  DETOPS_CUDA_LOOP(j, m) {
    Box<T> sum{T(0), T(0), T(0), T(0)};
    for (int64_t blk = 0; blk < blocks; ++blk) add(sum, partial[blk * m + j]);
    store(grad2 + 4 * j, sum);
  }
}

const char* op_name(Measure M) {
  return M == Measure::kGiou   ? "detops.generalized_box_iou"
         : M == Measure::kDiou ? "detops.distance_box_iou"
                               : "detops.complete_box_iou";
}

struct BoxPairBackend : detops::CudaBackend {
  template <Measure M, typename S>
  static void forward(const Tensor& boxes1, const Tensor& boxes2, acc_t<S> eps, Tensor& out) {
    using T = acc_t<S>;
    const int64_t n = boxes1.size(0), m = boxes2.size(0);
    cudaStream_t stream = detops::cuda::current_stream(boxes1);
    detops::cuda::launch<forward_kernel<M, S, T>>(
        op_name(M), detops::cuda::over(n * m, stream), boxes1.const_data_ptr<S>(),
        boxes2.const_data_ptr<S>(), n, m, eps, out.mutable_data_ptr<T>());
  }

  template <Measure M, typename S>
  static void backward(const Tensor& grad, const Tensor& boxes1, const Tensor& boxes2, acc_t<S> eps,
                       Tensor& grad1, Tensor& grad2) {
    using T = acc_t<S>;
    const char* op = op_name(M);
    const int64_t n = boxes1.size(0), m = boxes2.size(0), blocks = row_blocks(n);
    cudaStream_t stream = detops::cuda::current_stream(boxes1);
    const T* g = grad.const_data_ptr<T>();
    const S* b1 = boxes1.const_data_ptr<S>();
    const S* b2 = boxes2.const_data_ptr<S>();
    detops::cuda::launch<rows_kernel<M, S, T>>(op, detops::cuda::over(n, stream), g, b1, b2, n, m,
                                               eps, grad1.mutable_data_ptr<S>());
    // [blocks, M, 4] partial sums in T (grad's dtype).
    Tensor partial = torch::stable::new_empty(grad, {blocks, m, 4});
    auto* partial_data = reinterpret_cast<Box<T>*>(partial.mutable_data_ptr<T>());
    detops::cuda::launch<column_blocks_kernel<M, S, T>>(op, detops::cuda::over(blocks * m, stream),
                                                        g, b1, b2, n, m, blocks, eps, partial_data);
    detops::cuda::launch<columns_kernel<S, T>>(op, detops::cuda::over(m, stream), partial_data, m,
                                               blocks, grad2.mutable_data_ptr<S>());
  }
};

}  // namespace
}  // namespace detops::nms::box_pair::cuda

DETOPS_CUDA_LIBRARY_IMPL(m) {
  using Entry = detops::nms::box_pair::BoxPairEntry<detops::nms::box_pair::cuda::BoxPairBackend>;
  m.impl("generalized_box_iou", TORCH_BOX(&Entry::generalized_box_iou));
  m.impl("distance_box_iou", TORCH_BOX(&Entry::distance_box_iou));
  m.impl("complete_box_iou", TORCH_BOX(&Entry::complete_box_iou));
  m.impl("_generalized_box_iou_backward", TORCH_BOX(&Entry::generalized_box_iou_backward));
  m.impl("_distance_box_iou_backward", TORCH_BOX(&Entry::distance_box_iou_backward));
  m.impl("_complete_box_iou_backward", TORCH_BOX(&Entry::complete_box_iou_backward));
}
