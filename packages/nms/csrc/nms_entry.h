// The entry points of nms and batched_nms, shared by the CPU and CUDA kernels: argument
// checks, the empty case and dtype dispatch happen here, once.
#pragma once

#include <detops/checks.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>

namespace detops::nms {

inline void check_inputs(const char* op, const Tensor& boxes, const Tensor& scores,
                         const Tensor* idxs) {
  check_defined(op, "boxes", boxes);
  check_defined(op, "scores", scores);
  check(boxes.dim() == 2 && boxes.size(1) == 4, op,
        "boxes must be a 2-D tensor of shape [N, 4] in (x1, y1, x2, y2) format, got shape ",
        shape_str(boxes));
  check(scores.dim() == 1, op, "scores must be a 1-D tensor of shape [N], got shape ",
        shape_str(scores));
  check(scores.size(0) == boxes.size(0), op, "scores must have one entry per box: boxes has ",
        boxes.size(0), " boxes but scores has ", scores.size(0), " entries");
  check_floating(op, "boxes", boxes);
  check_same_dtype(op, "boxes", boxes, "scores", scores);
  check_same_device(op, "boxes", boxes, "scores", scores);
  if (idxs != nullptr) {
    check_defined(op, "idxs", *idxs);
    check(idxs->dim() == 1 && idxs->size(0) == boxes.size(0), op,
          "idxs must be a 1-D tensor of shape [N] with one class index per box (N = ",
          boxes.size(0), "), got shape ", shape_str(*idxs));
    check(idxs->scalar_type() == ScalarType::Long, op, "idxs must be an int64 tensor, got ",
          dtype_name(idxs->scalar_type()));
    check_same_device(op, "boxes", boxes, "idxs", *idxs);
  }
}

// Kernel provides `kMaxBoxes` and `template <typename S> static Tensor run(boxes, scores,
// idxs_or_null, iou_threshold)` for S the element type of boxes and scores.
template <typename Kernel>
struct Entry {
  static Tensor dispatch(const char* op, const Tensor& boxes, const Tensor& scores,
                         const Tensor* idxs, double iou_threshold) {
    check_inputs(op, boxes, scores, idxs);
    const int64_t n = boxes.size(0);
    if (n == 0) return torch::stable::new_empty(boxes, {0}, ScalarType::Long);
    check(n <= Kernel::kMaxBoxes, op, "at most ", Kernel::kMaxBoxes,
          " boxes are supported on this device, got ", n);
    return dispatch_floating(boxes.scalar_type(), op, "boxes", [&](auto tag) {
      using S = typename decltype(tag)::type;
      return Kernel::template run<S>(boxes, scores, idxs, iou_threshold);
    });
  }

  static Tensor nms(Tensor boxes, Tensor scores, double iou_threshold) {
    return dispatch("detops.nms", boxes, scores, nullptr, iou_threshold);
  }

  static Tensor batched_nms(Tensor boxes, Tensor scores, Tensor idxs, double iou_threshold) {
    return dispatch("detops.batched_nms", boxes, scores, &idxs, iou_threshold);
  }
};

}  // namespace detops::nms
