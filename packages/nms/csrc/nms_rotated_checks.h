// Argument checks of box_iou_rotated, nms_rotated and batched_nms_rotated, shared by the
// CPU and CUDA entry points; the scores and classes checks are nms_checks.h's.
#pragma once

#include <detops/checks.h>

#include "nms_checks.h"

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

}  // namespace detops::nms::rotated
