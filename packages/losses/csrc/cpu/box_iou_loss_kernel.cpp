// CPU kernels of detops::generalized_box_iou_loss, distance_box_iou_loss,
// complete_box_iou_loss and their backward ops: pairs split over threads (one writer per
// pair), the reductions in box_iou_loss_entry.h's fixed chunks. The per-pair loops are
// vectorised (DETOPS_VECTOR_CLONES; this file is compiled with -fno-trapping-math, see
// CMakeLists.txt): forward and backward 8 to 25 times faster than scalar code, with the same
// results (but for CIoU's atan, detops/box_pair_math.h's own).
#include <detops/vector_clones.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>

#include "box_iou_loss_entry.h"

namespace detops::box_iou_loss::cpu {
namespace {

using detops::box_pair::PairGrad;
using detops::box_pair::Terms;
using torch::stable::Tensor;

// Pairs per parallel_for piece: a pair costs some 10-40 ns.
constexpr int64_t kGrain = 4096;

template <Measure M, typename S, typename T>
DETOPS_FORCE_INLINE Terms<T> load(const S* b) {
  return detops::box_pair::terms<T>(static_cast<T>(b[0]), static_cast<T>(b[1]),
                                    static_cast<T>(b[2]), static_cast<T>(b[3]),
                                    M == Measure::kCiou);
}

template <typename S, typename T>
DETOPS_FORCE_INLINE void store(S* out, const detops::box_pair::Box<T>& g) {
  out[0] = static_cast<S>(g.x1);
  out[1] = static_cast<S>(g.y1);
  out[2] = static_cast<S>(g.x2);
  out[3] = static_cast<S>(g.y2);
}

template <Measure M, typename S, typename T>
DETOPS_VECTOR_CLONES void loss_span(int64_t begin, int64_t end, const S* __restrict__ a,
                                    const S* __restrict__ b, T eps, T* __restrict__ out) {
  for (int64_t k = begin; k < end; ++k) {
    out[k] =
        detops::box_pair::loss_value<M>(load<M, S, T>(a + 4 * k), load<M, S, T>(b + 4 * k), eps);
  }
}

// One loop per (incoming gradient per pair or one for all), so each is straight-line code.
template <Measure M, bool kPerElement, typename S, typename T>
DETOPS_VECTOR_CLONES void grad_span(int64_t begin, int64_t end, const S* __restrict__ a,
                                    const S* __restrict__ b, T eps, const T* __restrict__ g,
                                    T shared, S* __restrict__ g1, S* __restrict__ g2) {
  for (int64_t i = begin; i < end; ++i) {
    const PairGrad<T> pg = detops::box_pair::loss_grad<M>(
        load<M, S, T>(a + 4 * i), load<M, S, T>(b + 4 * i), eps, kPerElement ? g[i] : shared);
    store(g1 + 4 * i, pg.a);
    store(g2 + 4 * i, pg.b);
  }
}

struct BoxIouLossBackend : detops::CpuBackend {
  template <Measure M, typename S>
  static void losses(const Tensor& boxes1, const Tensor& boxes2, acc_t<S> eps, Tensor& out) {
    using T = acc_t<S>;
    const S* a = boxes1.const_data_ptr<S>();
    const S* b = boxes2.const_data_ptr<S>();
    T* o = out.mutable_data_ptr<T>();
    torch::stable::parallel_for(0, out.numel(), kGrain, [&](int64_t begin, int64_t end) {
      loss_span<M, S, T>(begin, end, a, b, eps, o);
    });
  }

  template <typename T>
  static void reduce(const Tensor& values, Tensor& partials, T divisor, Tensor& out) {
    const int64_t k = values.numel(), count = partials.numel();
    const T* v = values.const_data_ptr<T>();
    double* p = partials.mutable_data_ptr<double>();
    torch::stable::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        double sum = 0.0;
        const int64_t last = std::min(k, (c + 1) * kReduceChunk);
        for (int64_t i = c * kReduceChunk; i < last; ++i) sum += static_cast<double>(v[i]);
        p[c] = sum;
      }
    });
    double total = 0.0;
    for (int64_t c = 0; c < count; ++c) total += p[c];
    out.mutable_data_ptr<T>()[0] = static_cast<T>(total / static_cast<double>(divisor));
  }

  template <Measure M, typename S>
  static void backward(const Tensor& grad, const Tensor& boxes1, const Tensor& boxes2, acc_t<S> eps,
                       bool per_element, acc_t<S> divisor, Tensor& grad1, Tensor& grad2) {
    using T = acc_t<S>;
    const int64_t k = boxes1.numel() / 4;
    const S* a = boxes1.const_data_ptr<S>();
    const S* b = boxes2.const_data_ptr<S>();
    const T* g = grad.const_data_ptr<T>();
    const T shared = per_element ? T(0) : g[0] / divisor;
    S* g1 = grad1.mutable_data_ptr<S>();
    S* g2 = grad2.mutable_data_ptr<S>();
    torch::stable::parallel_for(0, k, kGrain, [&](int64_t begin, int64_t end) {
      if (per_element) {
        grad_span<M, true, S, T>(begin, end, a, b, eps, g, shared, g1, g2);
      } else {
        grad_span<M, false, S, T>(begin, end, a, b, eps, g, shared, g1, g2);
      }
    });
  }
};

}  // namespace
}  // namespace detops::box_iou_loss::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  using Entry = detops::box_iou_loss::BoxIouLossEntry<detops::box_iou_loss::cpu::BoxIouLossBackend>;
  m.impl("generalized_box_iou_loss", TORCH_BOX(&Entry::generalized_box_iou_loss));
  m.impl("distance_box_iou_loss", TORCH_BOX(&Entry::distance_box_iou_loss));
  m.impl("complete_box_iou_loss", TORCH_BOX(&Entry::complete_box_iou_loss));
  m.impl("_generalized_box_iou_loss_backward",
         TORCH_BOX(&Entry::generalized_box_iou_loss_backward));
  m.impl("_distance_box_iou_loss_backward", TORCH_BOX(&Entry::distance_box_iou_loss_backward));
  m.impl("_complete_box_iou_loss_backward", TORCH_BOX(&Entry::complete_box_iou_loss_backward));
}
