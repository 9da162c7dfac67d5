// The entry points of generalized_box_iou_loss, distance_box_iou_loss, complete_box_iou_loss
// and their backward ops, shared by the CPU and CUDA kernels: checks (box_iou_loss_checks.h),
// the empty case, the device guard, dtype dispatch and allocation happen here.
//
// Backend (detops/backend.h) provides, for measure M, the boxes' element type S and
// T = acc_t<S>, on contiguous tensors with K = boxes1.numel() / 4 > 0 pairs:
//   template <Measure M, typename S> static void losses(boxes1, boxes2, T eps, out);
//       out: K losses in T
//   template <typename T> static void reduce(values, Tensor& partials, T divisor, out);
//       values: K losses in T; partials: chunks(K) doubles; out: 0-dim T. Sums each chunk
//       of kReduceChunk consecutive losses in turn in double into partials[chunk], then the
//       partials in chunk order, and writes the total divided by divisor (K for "mean", 1
//       for "sum"): no atomics, the same order on every device and thread count.
//   template <Measure M, typename S> static void backward(grad, boxes1, boxes2, T eps,
//       bool per_element, T divisor, grad1, grad2);
//       a pair's incoming gradient is grad[k], or grad[0] / divisor for the reductions;
//       grad1, grad2: [K, 4] in S, one writer per pair.
#pragma once

#include <detops/backend.h>
#include <detops/box_pair_math.h>
#include <detops/checks.h>
#include <detops/contiguous.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>

#include <string>
#include <tuple>
#include <vector>

#include "box_iou_loss_checks.h"

namespace detops::box_iou_loss {

using detops::box_pair::Measure;

// Losses per partial sum of the reductions.
inline constexpr int64_t kReduceChunk = 4096;

inline int64_t chunks(int64_t k) {
  return (k + kReduceChunk - 1) / kReduceChunk;
}

template <typename Backend>
struct BoxIouLossEntry {
  static_assert(is_backend<Backend>());

  template <Measure M>
  static Tensor forward(const char* op, const Tensor& boxes1, const Tensor& boxes2,
                        const std::string& reduction_name, double eps) {
    const Reduction reduction = parse_reduction(op, reduction_name);
    check_loss_boxes(op, boxes1, boxes2);
    const int64_t k = boxes1.numel() / 4;
    const ScalarType dtype = loss_dtype(boxes1.scalar_type());
    const std::vector<int64_t> shape = pair_shape(boxes1);
    if (k == 0) {  // torchvision: an empty loss, a sum of 0 and a mean of 0 (0 * sum)
      return reduction == Reduction::kNone ? torch::stable::new_empty(boxes1, shape, dtype)
                                           : torch::stable::new_zeros(boxes1, {}, dtype);
    }
    const typename Backend::Guard guard(boxes1);
    Tensor values = torch::stable::new_empty(boxes1, {k}, dtype);
    return dispatch_floating(boxes1.scalar_type(), op, "boxes1", [&](auto tag) {
      using S = typename decltype(tag)::type;
      using T = acc_t<S>;
      Backend::template losses<M, S>(detops::contiguous(boxes1), detops::contiguous(boxes2),
                                     static_cast<T>(eps), values);
      if (reduction == Reduction::kNone) return torch::stable::reshape(values, shape);
      Tensor partials = torch::stable::new_empty(boxes1, {chunks(k)}, ScalarType::Double);
      Tensor out = torch::stable::new_empty(boxes1, {}, dtype);
      const T divisor = reduction == Reduction::kMean ? static_cast<T>(k) : T(1);
      Backend::template reduce<T>(values, partials, divisor, out);
      return out;
    });
  }

  template <Measure M>
  static std::tuple<Tensor, Tensor> backward(const char* op, const Tensor& grad,
                                             const Tensor& boxes1, const Tensor& boxes2,
                                             const std::string& reduction_name, double eps) {
    const Reduction reduction = parse_reduction(op, reduction_name);
    check_loss_boxes(op, boxes1, boxes2);
    check_loss_grad(op, grad, boxes1, reduction);
    const int64_t k = boxes1.numel() / 4;
    if (k == 0) {
      return {torch::stable::new_zeros(boxes1, boxes1.sizes()),
              torch::stable::new_zeros(boxes2, boxes2.sizes())};
    }
    const typename Backend::Guard guard(boxes1);
    Tensor grad1 = torch::stable::new_empty(boxes1, boxes1.sizes());
    Tensor grad2 = torch::stable::new_empty(boxes2, boxes2.sizes());
    dispatch_floating(boxes1.scalar_type(), op, "boxes1", [&](auto tag) {
      using S = typename decltype(tag)::type;
      using T = acc_t<S>;
      const T divisor = reduction == Reduction::kMean ? static_cast<T>(k) : T(1);
      Backend::template backward<M, S>(detops::contiguous(grad), detops::contiguous(boxes1),
                                       detops::contiguous(boxes2), static_cast<T>(eps),
                                       reduction == Reduction::kNone, divisor, grad1, grad2);
    });
    return {grad1, grad2};
  }

  static Tensor generalized_box_iou_loss(Tensor boxes1, Tensor boxes2, std::string reduction,
                                         double eps) {
    return forward<Measure::kGiou>("detops.generalized_box_iou_loss", boxes1, boxes2, reduction,
                                   eps);
  }
  static Tensor distance_box_iou_loss(Tensor boxes1, Tensor boxes2, std::string reduction,
                                      double eps) {
    return forward<Measure::kDiou>("detops.distance_box_iou_loss", boxes1, boxes2, reduction, eps);
  }
  static Tensor complete_box_iou_loss(Tensor boxes1, Tensor boxes2, std::string reduction,
                                      double eps) {
    return forward<Measure::kCiou>("detops.complete_box_iou_loss", boxes1, boxes2, reduction, eps);
  }
  static std::tuple<Tensor, Tensor> generalized_box_iou_loss_backward(Tensor grad, Tensor boxes1,
                                                                      Tensor boxes2,
                                                                      std::string reduction,
                                                                      double eps) {
    return backward<Measure::kGiou>("detops._generalized_box_iou_loss_backward", grad, boxes1,
                                    boxes2, reduction, eps);
  }
  static std::tuple<Tensor, Tensor> distance_box_iou_loss_backward(Tensor grad, Tensor boxes1,
                                                                   Tensor boxes2,
                                                                   std::string reduction,
                                                                   double eps) {
    return backward<Measure::kDiou>("detops._distance_box_iou_loss_backward", grad, boxes1, boxes2,
                                    reduction, eps);
  }
  static std::tuple<Tensor, Tensor> complete_box_iou_loss_backward(Tensor grad, Tensor boxes1,
                                                                   Tensor boxes2,
                                                                   std::string reduction,
                                                                   double eps) {
    return backward<Measure::kCiou>("detops._complete_box_iou_loss_backward", grad, boxes1, boxes2,
                                    reduction, eps);
  }
};

}  // namespace detops::box_iou_loss
