// CUDA kernels of detops::soft_nms and detops::batched_soft_nms.
//
// Soft-NMS is sequential by nature: each selection depends on every earlier decay. One
// block runs one class (soft_nms: the only one) from start to end; in each step its threads
// decay their share of the class's boxes in parallel and each finds its best survivor,
// then thread 0 picks the block's best among those. Two barriers a step, no atomics. For
// batched_soft_nms the boxes are stably sorted by class first, so each class is one
// contiguous run in input order; group_start_kernel marks where runs start (a
// nonzero() of the marks sizes the grid, the host round-trip of this op).
#include <detops/aten_call.h>
#include <detops/contiguous.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <detops/cuda_launch.cuh>
#include <tuple>

#include "nms_math.h"
#include "soft_nms_entry.h"

namespace detops::nms::cuda {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

constexpr int kSoftThreads = 128;
constexpr int64_t kLive = -1;     // step[p]: not selected, not dropped (yet)
constexpr int64_t kDropped = -2;  // step[p]: score fell below the threshold

// Marks the first position of every class run of the class-sorted list.
__global__ void group_start_kernel(const int64_t* __restrict__ cls, int64_t n,
                                   bool* __restrict__ starts) {
  DETOPS_CUDA_LOOP(p, n) {
    starts[p] = p == 0 || cls[p] != cls[p - 1];
  }
}

template <typename S, typename T>
__device__ Box<T> load_box(const S* boxes, int64_t i) {
  const S* b = boxes + 4 * i;
  return make_box(static_cast<T>(b[0]), static_cast<T>(b[1]), static_cast<T>(b[2]),
                  static_cast<T>(b[3]));
}

// Block g runs soft-NMS over positions [start[g], start[g + 1]) (the last ends at n).
// Position p is input box order[p] (order null: p itself). Writes, per position, the step
// at which the box was selected (or kDropped) to step, its score then to score, and sets
// kept (zeroed) for the selected positions.
template <typename S, typename T>
__global__ void soft_kernel(const S* __restrict__ boxes, const S* __restrict__ scores,
                            const int64_t* __restrict__ order, const int64_t* __restrict__ start,
                            int64_t groups, int64_t n, SoftParams p, int64_t* __restrict__ step,
                            T* __restrict__ score, bool* __restrict__ kept) {
  __shared__ T best_score[kSoftThreads];
  __shared__ int64_t best_pos[kSoftThreads];
  __shared__ int64_t chosen;
  const int t = threadIdx.x;
  const int64_t begin = start[blockIdx.x];
  const int64_t end = blockIdx.x + 1 < groups ? start[blockIdx.x + 1] : n;
  auto input = [&](int64_t q) { return order != nullptr ? order[q] : q; };

  T my_score = T(0);
  int64_t my_pos = -1;
  for (int64_t q = begin + t; q < end; q += blockDim.x) {
    const T s = static_cast<T>(scores[input(q)]);
    score[q] = s;
    step[q] = dropped(s, p) ? kDropped : kLive;
    if (step[q] == kLive && (my_pos < 0 || selected_before(s, input(q), my_score, input(my_pos)))) {
      my_score = s;
      my_pos = q;
    }
  }
  for (int64_t k = 0;; ++k) {
    best_score[t] = my_score;
    best_pos[t] = my_pos;
    __syncthreads();
    if (t == 0) {
      int64_t c = -1;
      T c_score = T(0);
      for (int u = 0; u < static_cast<int>(blockDim.x); ++u) {
        const int64_t q = best_pos[u];
        if (q >= 0 && (c < 0 || selected_before(best_score[u], input(q), c_score, input(c)))) {
          c = q;
          c_score = best_score[u];
        }
      }
      if (c >= 0) {
        step[c] = k;
        kept[c] = true;
      }
      chosen = c;
    }
    __syncthreads();
    const int64_t c = chosen;
    if (c < 0) return;
    const Box<T> a = load_box<S, T>(boxes, input(c));
    my_pos = -1;
    for (int64_t q = begin + t; q < end; q += blockDim.x) {
      if (step[q] != kLive) continue;
      const T s = decayed(score[q], iou(a, load_box<S, T>(boxes, input(q))), p);
      score[q] = s;
      if (dropped(s, p)) {
        step[q] = kDropped;
      } else if (my_pos < 0 || selected_before(s, input(q), my_score, input(my_pos))) {
        my_score = s;
        my_pos = q;
      }
    }
  }
}

// out_index[r] = input box of position pos[r], out_score[r] its score in the output dtype.
template <typename S, typename T>
__global__ void gather_kernel(const int64_t* __restrict__ pos, int64_t k,
                              const int64_t* __restrict__ order, const T* __restrict__ score,
                              int64_t* __restrict__ out_index, S* __restrict__ out_score) {
  DETOPS_CUDA_LOOP(r, k) {
    const int64_t q = pos[r];
    out_index[r] = order != nullptr ? order[q] : q;
    out_score[r] = static_cast<S>(score[q]);
  }
}

template <typename S>
std::tuple<Tensor, Tensor> run_soft(const Tensor& boxes_in, const Tensor& scores_in,
                                    const Tensor* idxs, const SoftParams& p) {
  using T = acc_t<S>;
  const char* op = idxs != nullptr ? "detops.batched_soft_nms" : "detops.soft_nms";
  const int64_t n = boxes_in.size(0);
  cudaStream_t stream = detops::cuda::current_stream(boxes_in);
  const Tensor boxes = detops::contiguous(boxes_in);
  const Tensor scores = detops::contiguous(scores_in);

  Tensor order;  // position -> input box (batched only: grouped by class, stably)
  Tensor start;  // first position of each class
  if (idxs != nullptr) {
    auto by_class = sort_stable(*idxs, 0, /*descending=*/false);
    order = detops::contiguous(by_class.second);
    const Tensor cls = detops::contiguous(by_class.first);
    Tensor marks = torch::stable::new_empty(boxes, {n}, ScalarType::Bool);
    detops::cuda::launch<group_start_kernel>(op, detops::cuda::over(n, stream),
                                             cls.const_data_ptr<int64_t>(), n,
                                             marks.mutable_data_ptr<bool>());
    start = detops::contiguous(nonzero_1d(marks));
  } else {
    start = torch::stable::new_zeros(boxes, {1}, ScalarType::Long);
  }
  const int64_t groups = start.size(0);
  check(groups <= 0x7fffffff, op, "at most 2147483647 classes are supported, got ", groups);
  const int64_t* order_data = idxs != nullptr ? order.const_data_ptr<int64_t>() : nullptr;

  Tensor step = torch::stable::new_empty(boxes, {n}, ScalarType::Long);
  Tensor selected = torch::stable::new_zeros(boxes, {n}, ScalarType::Bool);
  Tensor score = torch::stable::new_empty(
      boxes, {n}, sizeof(T) == sizeof(double) ? ScalarType::Double : ScalarType::Float);
  detops::cuda::launch<soft_kernel<S, T>>(
      op, detops::cuda::Shape(dim3(static_cast<unsigned>(groups)), dim3(kSoftThreads), stream),
      boxes.const_data_ptr<S>(), scores.const_data_ptr<S>(), order_data,
      start.const_data_ptr<int64_t>(), groups, n, p, step.mutable_data_ptr<int64_t>(),
      score.mutable_data_ptr<T>(), selected.mutable_data_ptr<bool>());

  // Kept positions in output order: selection order for soft_nms; by decreasing score
  // (NaN first), then increasing input index, across classes for batched_soft_nms.
  const Tensor kept = nonzero_1d(selected);
  Tensor pos;
  if (idxs == nullptr) {
    pos = torch::stable::index_select(
        kept, 0, sort_stable(torch::stable::index_select(step, 0, kept), 0, false).second);
  } else {
    const Tensor by_index = torch::stable::index_select(
        kept, 0, sort_stable(torch::stable::index_select(order, 0, kept), 0, false).second);
    pos = torch::stable::index_select(
        by_index, 0, sort_stable(torch::stable::index_select(score, 0, by_index), 0, true).second);
  }
  pos = detops::contiguous(pos);
  const int64_t k = pos.size(0);
  Tensor out_index = torch::stable::new_empty(boxes, {k}, ScalarType::Long);
  Tensor out_score = torch::stable::new_empty(scores, {k});
  if (k > 0) {
    detops::cuda::launch<gather_kernel<S, T>>(
        op, detops::cuda::over(k, stream), pos.const_data_ptr<int64_t>(), k, order_data,
        score.const_data_ptr<T>(), out_index.mutable_data_ptr<int64_t>(),
        out_score.mutable_data_ptr<S>());
  }
  return {out_index, out_score};
}

struct SoftNmsBackend : detops::CudaBackend {
  template <typename S>
  static std::tuple<Tensor, Tensor> run(const Tensor& boxes, const Tensor& scores,
                                        const Tensor* idxs, const SoftParams& p) {
    return run_soft<S>(boxes, scores, idxs, p);
  }
};

}  // namespace
}  // namespace detops::nms::cuda

DETOPS_CUDA_LIBRARY_IMPL(m) {
  using Entry = detops::nms::SoftNmsEntry<detops::nms::cuda::SoftNmsBackend>;
  m.impl("soft_nms", TORCH_BOX(&Entry::soft_nms));
  m.impl("batched_soft_nms", TORCH_BOX(&Entry::batched_soft_nms));
}
