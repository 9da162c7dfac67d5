// CPU kernels of detops::generalized_box_iou, distance_box_iou, complete_box_iou and their
// backward ops.
//
// Each box's terms (sides, area, centre, CIoU's atan) are computed once, not once per pair;
// the values are the same either way. The forward splits the rows of the result over
// threads. The backward splits the row blocks of box_pair_entry.h over threads: a thread
// sums each of its rows' gradients into that row's boxes1 box and its block's gradients
// into one partial sum per boxes2 box; a second pass adds the partial sums of each boxes2
// box in block order. Every element has one writer and a fixed order, so the result does
// not depend on the number of threads.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <vector>

#include "box_pair_entry.h"

namespace detops::nms::box_pair::cpu {
namespace {

using detops::box_pair::Box;
using detops::box_pair::PairGrad;
using detops::box_pair::Terms;
using torch::stable::Tensor;

template <typename S, typename T>
std::vector<Terms<T>> box_terms(const Tensor& boxes, bool with_angle) {
  const int64_t n = boxes.size(0);
  const S* b = boxes.const_data_ptr<S>();
  std::vector<Terms<T>> out(n);
  for (int64_t i = 0; i < n; ++i, b += 4) {
    out[i] = detops::box_pair::terms<T>(b[0], b[1], b[2], b[3], with_angle);
  }
  return out;
}

// A pair costs some 10-40 ns: ~16k pairs per task keep thread wake-ups small.
int64_t row_grain(int64_t m) {
  return std::max<int64_t>(1, 16384 / m);
}

template <Measure M, typename S>
void forward(const Tensor& boxes1, const Tensor& boxes2, acc_t<S> eps, Tensor& out) {
  using T = acc_t<S>;
  const int64_t n = boxes1.size(0), m = boxes2.size(0);
  const std::vector<Terms<T>> a = box_terms<S, T>(boxes1, M == Measure::kCiou);
  const std::vector<Terms<T>> b = box_terms<S, T>(boxes2, M == Measure::kCiou);
  T* o = out.mutable_data_ptr<T>();
  torch::stable::parallel_for(0, n, row_grain(m), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T* row = o + i * m;
      for (int64_t j = 0; j < m; ++j) {
        row[j] = detops::box_pair::pairwise_value<M, S>(a[i], b[j], eps);
      }
    }
  });
}

template <typename T>
void add(Box<T>& acc, const Box<T>& g) {
  acc.x1 += g.x1;
  acc.y1 += g.y1;
  acc.x2 += g.x2;
  acc.y2 += g.y2;
}

template <typename S, typename T>
void store(S* out, const Box<T>& g) {
  out[0] = static_cast<S>(g.x1);
  out[1] = static_cast<S>(g.y1);
  out[2] = static_cast<S>(g.x2);
  out[3] = static_cast<S>(g.y2);
}

template <Measure M, typename S>
void backward(const Tensor& grad, const Tensor& boxes1, const Tensor& boxes2, acc_t<S> eps,
              Tensor& grad1, Tensor& grad2) {
  using T = acc_t<S>;
  const int64_t n = boxes1.size(0), m = boxes2.size(0);
  const std::vector<Terms<T>> a = box_terms<S, T>(boxes1, M == Measure::kCiou);
  const std::vector<Terms<T>> b = box_terms<S, T>(boxes2, M == Measure::kCiou);
  const T* g = grad.const_data_ptr<T>();
  S* g1 = grad1.mutable_data_ptr<S>();
  S* g2 = grad2.mutable_data_ptr<S>();
  const int64_t blocks = row_blocks(n);
  const Box<T> zero{T(0), T(0), T(0), T(0)};
  std::vector<Box<T>> partial(static_cast<size_t>(blocks * m), zero);
  const int64_t grain = std::max<int64_t>(1, row_grain(m) / kRowBlock);
  torch::stable::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      Box<T>* col = partial.data() + blk * m;
      const int64_t last = std::min(n, (blk + 1) * kRowBlock);
      for (int64_t i = blk * kRowBlock; i < last; ++i) {
        const T* grow = g + i * m;
        Box<T> row = zero;
        for (int64_t j = 0; j < m; ++j) {
          const PairGrad<T> pg = detops::box_pair::pairwise_grad<M, S>(a[i], b[j], eps, grow[j]);
          add(row, pg.a);
          add(col[j], pg.b);
        }
        store(g1 + 4 * i, row);
      }
    }
  });
  torch::stable::parallel_for(0, m, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      Box<T> sum = zero;
      for (int64_t blk = 0; blk < blocks; ++blk) add(sum, partial[blk * m + j]);
      store(g2 + 4 * j, sum);
    }
  });
}

struct BoxPairBackend : detops::CpuBackend {
  template <Measure M, typename S>
  static void forward(const Tensor& boxes1, const Tensor& boxes2, acc_t<S> eps, Tensor& out) {
    cpu::forward<M, S>(boxes1, boxes2, eps, out);
  }
  template <Measure M, typename S>
  static void backward(const Tensor& grad, const Tensor& boxes1, const Tensor& boxes2, acc_t<S> eps,
                       Tensor& grad1, Tensor& grad2) {
    cpu::backward<M, S>(grad, boxes1, boxes2, eps, grad1, grad2);
  }
};

}  // namespace
}  // namespace detops::nms::box_pair::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  using Entry = detops::nms::box_pair::BoxPairEntry<detops::nms::box_pair::cpu::BoxPairBackend>;
  m.impl("generalized_box_iou", TORCH_BOX(&Entry::generalized_box_iou));
  m.impl("distance_box_iou", TORCH_BOX(&Entry::distance_box_iou));
  m.impl("complete_box_iou", TORCH_BOX(&Entry::complete_box_iou));
  m.impl("_generalized_box_iou_backward", TORCH_BOX(&Entry::generalized_box_iou_backward));
  m.impl("_distance_box_iou_backward", TORCH_BOX(&Entry::distance_box_iou_backward));
  m.impl("_complete_box_iou_backward", TORCH_BOX(&Entry::complete_box_iou_backward));
}
