// The entry points of generalized_box_iou, distance_box_iou, complete_box_iou and their
// backward ops, shared by the CPU and CUDA kernels: checks (box_pair_checks.h), the empty
// case, the device guard, dtype dispatch and allocation happen here.
//
// The backward sums each box's gradient over its row or column in one fixed order, on both
// devices, so the result is bitwise repeatable and the emulated CUDA kernels equal the CPU
// ones: grad boxes1[i] = sum over j = 0, 1, ..., M - 1 in turn; grad boxes2[j] = the sum over
// row blocks b = 0, 1, ... in turn of that block's partial sum, each block being kRowBlock
// consecutive rows i summed in turn. Sums are in the compute type T (float32 for float16 /
// bfloat16), rounded to the boxes' dtype once.
#pragma once

#include <detops/backend.h>
#include <detops/box_pair_math.h>
#include <detops/checks.h>
#include <detops/contiguous.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>

#include <tuple>

#include "box_pair_checks.h"

namespace detops::nms::box_pair {

using detops::box_pair::Measure;

// Rows per block of the boxes2 gradient's partial sums.
constexpr int64_t kRowBlock = 64;

inline int64_t row_blocks(int64_t n) {
  return (n + kRowBlock - 1) / kRowBlock;
}

// Backend (detops/backend.h) provides, for measure M and the boxes' element type S with
// T = acc_t<S>, on contiguous tensors with N, M > 0:
//   template <Measure M, typename S> static void forward(boxes1, boxes2, T eps, out);
//       out [N, M] in T
//   template <Measure M, typename S> static void backward(grad, boxes1, boxes2, T eps,
//       grad1, grad2);  grad [N, M] in T; grad1 [N, 4], grad2 [M, 4] in S, uninitialised;
//       in the summation order above.
template <typename Backend>
struct BoxPairEntry {
  static_assert(is_backend<Backend>());

  template <Measure M>
  static Tensor forward(const char* op, const Tensor& boxes1, const Tensor& boxes2, double eps) {
    check_pair_inputs(op, boxes1, boxes2);
    const int64_t n = boxes1.size(0), m = boxes2.size(0);
    Tensor out = torch::stable::new_empty(boxes1, {n, m}, result_dtype(boxes1.scalar_type()));
    if (n == 0 || m == 0) return out;
    const typename Backend::Guard guard(boxes1);
    dispatch_floating(boxes1.scalar_type(), op, "boxes1", [&](auto tag) {
      using S = typename decltype(tag)::type;
      Backend::template forward<M, S>(detops::contiguous(boxes1), detops::contiguous(boxes2),
                                      static_cast<acc_t<S>>(eps), out);
    });
    return out;
  }

  template <Measure M>
  static std::tuple<Tensor, Tensor> backward(const char* op, const Tensor& grad,
                                             const Tensor& boxes1, const Tensor& boxes2,
                                             double eps) {
    check_pair_inputs(op, boxes1, boxes2);
    check_pair_grad(op, grad, boxes1, boxes2);
    const int64_t n = boxes1.size(0), m = boxes2.size(0);
    if (n == 0 || m == 0) {
      return {torch::stable::new_zeros(boxes1, {n, 4}), torch::stable::new_zeros(boxes2, {m, 4})};
    }
    const typename Backend::Guard guard(boxes1);
    Tensor grad1 = torch::stable::new_empty(boxes1, {n, 4});
    Tensor grad2 = torch::stable::new_empty(boxes2, {m, 4});
    dispatch_floating(boxes1.scalar_type(), op, "boxes1", [&](auto tag) {
      using S = typename decltype(tag)::type;
      Backend::template backward<M, S>(detops::contiguous(grad), detops::contiguous(boxes1),
                                       detops::contiguous(boxes2), static_cast<acc_t<S>>(eps),
                                       grad1, grad2);
    });
    return {grad1, grad2};
  }

  static Tensor generalized_box_iou(Tensor boxes1, Tensor boxes2) {
    return forward<Measure::kGiou>("detops.generalized_box_iou", boxes1, boxes2, 0.0);
  }
  static Tensor distance_box_iou(Tensor boxes1, Tensor boxes2, double eps) {
    return forward<Measure::kDiou>("detops.distance_box_iou", boxes1, boxes2, eps);
  }
  static Tensor complete_box_iou(Tensor boxes1, Tensor boxes2, double eps) {
    return forward<Measure::kCiou>("detops.complete_box_iou", boxes1, boxes2, eps);
  }
  static std::tuple<Tensor, Tensor> generalized_box_iou_backward(Tensor grad, Tensor boxes1,
                                                                 Tensor boxes2) {
    return backward<Measure::kGiou>("detops._generalized_box_iou_backward", grad, boxes1, boxes2,
                                    0.0);
  }
  static std::tuple<Tensor, Tensor> distance_box_iou_backward(Tensor grad, Tensor boxes1,
                                                              Tensor boxes2, double eps) {
    return backward<Measure::kDiou>("detops._distance_box_iou_backward", grad, boxes1, boxes2, eps);
  }
  static std::tuple<Tensor, Tensor> complete_box_iou_backward(Tensor grad, Tensor boxes1,
                                                              Tensor boxes2, double eps) {
    return backward<Measure::kCiou>("detops._complete_box_iou_backward", grad, boxes1, boxes2, eps);
  }
};

}  // namespace detops::nms::box_pair
