// The entry points of box_iou_rotated, nms_rotated and batched_nms_rotated, shared by the
// CPU and CUDA kernels: argument checks, the empty case and dtype dispatch happen here.
#pragma once

#include <detops/checks.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>

#include "nms_entry.h"

namespace detops::nms::rotated {

inline void check_rotated_boxes(const char* op, const char* name, const char* count,
                                const Tensor& boxes) {
  check_defined(op, name, boxes);
  check(boxes.dim() == 2 && boxes.size(1) == 5, op, name, " must be a 2-D tensor of shape [", count,
        ", 5] in (cx, cy, w, h, r) format, got shape ", shape_str(boxes));
  check_floating(op, name, boxes);
}

inline void check_nms_inputs(const char* op, const Tensor& boxes, const Tensor& scores,
                             const Tensor* idxs) {
  check_rotated_boxes(op, "boxes", "N", boxes);
  check_defined(op, "scores", scores);
  check_scores_shape(op, boxes, scores);
  check_scores_and_classes(op, boxes, scores, idxs);
}

// Kernel provides `kMaxBoxes` (NMS), and for S the element type:
// `template <typename S> static void iou(boxes1, boxes2, out)` (out [N, M], N, M > 0) and
// `template <typename S> static Tensor nms(boxes, scores, idxs_or_null, iou_threshold)`.
template <typename Kernel>
struct RotatedEntry {
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
    dispatch_floating(boxes1.scalar_type(), op, "boxes1", [&](auto tag) {
      using S = typename decltype(tag)::type;
      Kernel::template iou<S>(torch::stable::contiguous(boxes1), torch::stable::contiguous(boxes2),
                              out);
    });
    return out;
  }

  static Tensor dispatch_nms(const char* op, const Tensor& boxes, const Tensor& scores,
                             const Tensor* idxs, double iou_threshold) {
    check_nms_inputs(op, boxes, scores, idxs);
    const int64_t n = boxes.size(0);
    if (n == 0) return torch::stable::new_empty(boxes, {0}, ScalarType::Long);
    check(n <= Kernel::kMaxBoxes, op, "at most ", Kernel::kMaxBoxes,
          " boxes are supported on this device, got ", n);
    return dispatch_floating(boxes.scalar_type(), op, "boxes", [&](auto tag) {
      using S = typename decltype(tag)::type;
      return Kernel::template nms<S>(boxes, scores, idxs, iou_threshold);
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
