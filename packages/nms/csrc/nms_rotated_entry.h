// The entry points of box_iou_rotated, nms_rotated and batched_nms_rotated, shared by the
// CPU and CUDA kernels: argument checks (nms_rotated_checks.h), the empty case, the device
// guard and dtype dispatch happen here.
#pragma once

#include <detops/backend.h>
#include <detops/checks.h>
#include <detops/contiguous.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>

#include "nms_rotated_checks.h"

namespace detops::nms::rotated {

// Backend (detops/backend.h) provides `kMaxBoxes` (NMS), and for S the element type:
// `template <typename S> static void iou(boxes1, boxes2, out)` (out [N, M], N, M > 0) and
// `template <typename S> static Tensor nms(boxes, scores, idxs_or_null, iou_threshold)`.
template <typename Backend>
struct NmsRotatedEntry {
  static_assert(is_backend<Backend>());

  static Tensor box_iou_rotated(Tensor boxes1, Tensor boxes2) {
    const char* op = "detops.box_iou_rotated";
    check_rotated_boxes(op, "boxes1", "N", boxes1);
    check_rotated_boxes(op, "boxes2", "M", boxes2);
    check_same_dtype(op, "boxes1", boxes1, "boxes2", boxes2);
    check_same_device(op, "boxes1", boxes1, "boxes2", boxes2);
    const int64_t n = boxes1.size(0), m = boxes2.size(0);
    int64_t pairs = 0;
    check(mul_fits(n, m, pairs), op, "the IoU matrix of ", n, " x ", m,
          " boxes has more elements than int64 can count");
    Tensor out = torch::stable::new_empty(boxes1, {n, m});
    if (pairs == 0) return out;
    const typename Backend::Guard guard(boxes1);
    dispatch_floating(boxes1.scalar_type(), op, "boxes1", [&](auto tag) {
      using S = typename decltype(tag)::type;
      Backend::template iou<S>(detops::contiguous(boxes1), detops::contiguous(boxes2), out);
    });
    return out;
  }

  static Tensor dispatch_nms(const char* op, const Tensor& boxes, const Tensor& scores,
                             const Tensor* idxs, double iou_threshold) {
    check_nms_inputs(op, boxes, scores, idxs);
    const int64_t n = boxes.size(0);
    if (n == 0) return torch::stable::new_empty(boxes, {0}, ScalarType::Long);
    check(n <= Backend::kMaxBoxes, op, "at most ", Backend::kMaxBoxes,
          " boxes are supported on this device, got ", n);
    const typename Backend::Guard guard(boxes);
    return dispatch_floating(boxes.scalar_type(), op, "boxes", [&](auto tag) {
      using S = typename decltype(tag)::type;
      return Backend::template nms<S>(boxes, scores, idxs, iou_threshold);
    });
  }

  static Tensor nms_rotated(Tensor boxes, Tensor scores, double iou_threshold) {
    return dispatch_nms("detops.nms_rotated", boxes, scores, nullptr, iou_threshold);
  }

  static Tensor batched_nms_rotated(Tensor boxes, Tensor scores, Tensor idxs,
                                    double iou_threshold) {
    return dispatch_nms("detops.batched_nms_rotated", boxes, scores, &idxs, iou_threshold);
  }
};

}  // namespace detops::nms::rotated
