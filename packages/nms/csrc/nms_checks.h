// Argument checks shared by the CPU and CUDA entry points of nms and batched_nms.
#pragma once

#include <detops/checks.h>

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

}  // namespace detops::nms
