// Argument checks of the pairwise box-pair measures and their backward ops, shared by the
// CPU and CUDA entry points.
#pragma once

#include <detops/checks.h>

namespace detops::nms::box_pair {

inline void check_pair_boxes(const char* op, const char* name, const char* count,
                             const Tensor& boxes) {
  check_defined(op, name, boxes);
  check(boxes.dim() == 2 && boxes.size(1) == 4, op, name, " must be a 2-D tensor of shape [", count,
        ", 4] in (x1, y1, x2, y2) format, got shape ", shape_str(boxes));
  check_floating(op, name, boxes);
}

// boxes1 [N, 4] and boxes2 [M, 4]: floating, one dtype, one device; returns N * M.
inline int64_t check_pair_inputs(const char* op, const Tensor& boxes1, const Tensor& boxes2) {
  check_pair_boxes(op, "boxes1", "N", boxes1);
  check_pair_boxes(op, "boxes2", "M", boxes2);
  check_same_dtype(op, "boxes1", boxes1, "boxes2", boxes2);
  check_same_device(op, "boxes1", boxes1, "boxes2", boxes2);
  int64_t pairs = 0;
  check(mul_fits(boxes1.size(0), boxes2.size(0), pairs), op, "the result of ", boxes1.size(0),
        " x ", boxes2.size(0), " boxes has more elements than int64 can count");
  return pairs;
}

// The dtype of the result: narrow boxes give float32.
inline ScalarType result_dtype(ScalarType boxes) {
  return boxes == ScalarType::Half || boxes == ScalarType::BFloat16 ? ScalarType::Float : boxes;
}

// grad: [N, M] in the forward result's dtype, on the boxes' device.
inline void check_pair_grad(const char* op, const Tensor& grad, const Tensor& boxes1,
                            const Tensor& boxes2) {
  check_defined(op, "grad", grad);
  check(grad.dim() == 2 && grad.size(0) == boxes1.size(0) && grad.size(1) == boxes2.size(0), op,
        "grad must have shape [", boxes1.size(0), ", ", boxes2.size(0), "] (N x M), got shape ",
        shape_str(grad));
  const ScalarType want = result_dtype(boxes1.scalar_type());
  check(grad.scalar_type() == want, op, "grad must have dtype ", dtype_name(want),
        " (the result's), got ", dtype_name(grad.scalar_type()));
  check_same_device(op, "boxes1", boxes1, "grad", grad);
}

}  // namespace detops::nms::box_pair
