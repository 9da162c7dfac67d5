// The entry points of nms, batched_nms and nms_per_image, shared by the CPU and CUDA
// kernels: argument checks, the empty case and dtype dispatch happen here, once.
#pragma once

#include <detops/checks.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>

#include <limits>
#include <optional>

namespace detops::nms {

// The checks of scores and of the optional class indices, against boxes [N, ...]: shared by
// the axis-aligned and the rotated NMS entry points.
inline void check_scores_shape(const char* op, const Tensor& boxes, const Tensor& scores) {
  check(scores.dim() == 1, op, "scores must be a 1-D tensor of shape [N], got shape ",
        shape_str(scores));
  check(scores.size(0) == boxes.size(0), op, "scores must have one entry per box: boxes has ",
        boxes.size(0), " boxes but scores has ", scores.size(0), " entries");
}

inline void check_scores_and_classes(const char* op, const Tensor& boxes, const Tensor& scores,
                                     const Tensor* idxs) {
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

inline void check_inputs(const char* op, const Tensor& boxes, const Tensor& scores,
                         const Tensor* idxs) {
  check_defined(op, "boxes", boxes);
  check_defined(op, "scores", scores);
  check(boxes.dim() == 2 && boxes.size(1) == 4, op,
        "boxes must be a 2-D tensor of shape [N, 4] in (x1, y1, x2, y2) format, got shape ",
        shape_str(boxes));
  check_scores_shape(op, boxes, scores);
  check_floating(op, "boxes", boxes);
  check_scores_and_classes(op, boxes, scores, idxs);
}

// max_output as a count: kNoLimit for None.
constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max();

inline int64_t limit_of(const char* op, const std::optional<int64_t>& max_output) {
  if (!max_output.has_value()) return kNoLimit;
  check(*max_output >= 0, op, "max_output must be None or >= 0, got ", *max_output);
  return *max_output;
}

inline void check_per_image_inputs(const char* op, const Tensor& boxes, const Tensor& scores,
                                   const Tensor* idxs) {
  check_defined(op, "boxes", boxes);
  check_defined(op, "scores", scores);
  check(boxes.dim() == 3 && boxes.size(2) == 4, op,
        "boxes must be a 3-D tensor of shape [B, N, 4], got shape ", shape_str(boxes));
  check(scores.dim() == 2 && scores.size(0) == boxes.size(0) && scores.size(1) == boxes.size(1), op,
        "scores must be a 2-D tensor of shape [B, N] = [", boxes.size(0), ", ", boxes.size(1),
        "], got shape ", shape_str(scores));
  check(is_floating(boxes.scalar_type()) && boxes.scalar_type() == scores.scalar_type(), op,
        "boxes and scores must have the same floating-point dtype, got ",
        dtype_name(boxes.scalar_type()), " and ", dtype_name(scores.scalar_type()));
  check_same_device(op, "boxes", boxes, "scores", scores);
  if (idxs != nullptr) {
    check_defined(op, "idxs", *idxs);
    check(idxs->scalar_type() == ScalarType::Long && idxs->dim() == 2 &&
              idxs->size(0) == boxes.size(0) && idxs->size(1) == boxes.size(1),
          op, "idxs must be an int64 tensor of shape [B, N], got ", dtype_name(idxs->scalar_type()),
          " of shape ", shape_str(*idxs));
    check_same_device(op, "boxes", boxes, "idxs", *idxs);
  }
}

// Kernel provides `kMaxBoxes` and, for S the element type of boxes and scores,
// `template <typename S> static Tensor run(boxes, scores, idxs_or_null, iou_threshold,
// limit)` (the first `limit` kept indices) and `run_per_image` with the same arguments on
// [B, N, 4] boxes (limit per image; rows (image, box)).
template <typename Kernel>
struct Entry {
  static Tensor dispatch(const char* op, const Tensor& boxes, const Tensor& scores,
                         const Tensor* idxs, double iou_threshold,
                         const std::optional<int64_t>& max_output) {
    check_inputs(op, boxes, scores, idxs);
    const int64_t limit = limit_of(op, max_output);
    const int64_t n = boxes.size(0);
    if (n == 0 || limit == 0) return torch::stable::new_empty(boxes, {0}, ScalarType::Long);
    check(n <= Kernel::kMaxBoxes, op, "at most ", Kernel::kMaxBoxes,
          " boxes are supported on this device, got ", n);
    return dispatch_floating(boxes.scalar_type(), op, "boxes", [&](auto tag) {
      using S = typename decltype(tag)::type;
      return Kernel::template run<S>(boxes, scores, idxs, iou_threshold, limit);
    });
  }

  static Tensor nms(Tensor boxes, Tensor scores, double iou_threshold,
                    std::optional<int64_t> max_output) {
    return dispatch("detops.nms", boxes, scores, nullptr, iou_threshold, max_output);
  }

  static Tensor batched_nms(Tensor boxes, Tensor scores, Tensor idxs, double iou_threshold,
                            std::optional<int64_t> max_output) {
    return dispatch("detops.batched_nms", boxes, scores, &idxs, iou_threshold, max_output);
  }

  static Tensor nms_per_image(Tensor boxes, Tensor scores, std::optional<Tensor> idxs,
                              double iou_threshold, std::optional<int64_t> max_output) {
    const char* op = "detops.nms_per_image";
    const Tensor* classes = idxs.has_value() ? &*idxs : nullptr;
    check_per_image_inputs(op, boxes, scores, classes);
    const int64_t limit = limit_of(op, max_output);
    if (boxes.size(0) == 0 || boxes.size(1) == 0 || limit == 0) {
      return torch::stable::new_empty(boxes, {0, 2}, ScalarType::Long);
    }
    check(boxes.size(1) <= Kernel::kMaxBoxes, op, "at most ", Kernel::kMaxBoxes,
          " boxes per image are supported on this device, got ", boxes.size(1));
    return dispatch_floating(boxes.scalar_type(), op, "boxes", [&](auto tag) {
      using S = typename decltype(tag)::type;
      return Kernel::template run_per_image<S>(boxes, scores, classes, iou_threshold, limit);
    });
  }
};

}  // namespace detops::nms
