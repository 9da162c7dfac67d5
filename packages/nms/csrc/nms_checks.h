// Argument checks of the NMS ops (nms, batched_nms, nms_per_image, soft_nms,
// batched_soft_nms; the rotated ops reuse the scores and classes checks), shared by the CPU
// and CUDA entry points. Their messages are the ones the Python fake kernels repeat.
#pragma once

#include <detops/checks.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "nms_math.h"

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

inline SoftParams soft_params(const char* op, double iou_threshold, double sigma,
                              double score_threshold, const std::string& method) {
  check(method == "gaussian" || method == "linear", op,
        "method must be \"gaussian\" or \"linear\", got \"", method, "\"");
  const SoftMethod m = method == "linear" ? SoftMethod::kLinear : SoftMethod::kGaussian;
  // A NaN sigma fails too: every weight would be NaN.
  check(m != SoftMethod::kGaussian || sigma > 0, op,
        "sigma must be > 0 for the gaussian method, got ", sigma);
  return SoftParams{m, iou_threshold, sigma, score_threshold};
}

}  // namespace detops::nms
