// Argument checks of the paired box IoU losses and their backward ops, shared by the CPU and
// CUDA entry points. The reduction names are sigmoid_focal_loss's (focal_loss_checks.h).
#pragma once

#include <detops/checks.h>
#include <torch/csrc/stable/tensor.h>

#include <vector>

#include "focal_loss_checks.h"

namespace detops::box_iou_loss {

using detops::focal_loss::parse_reduction;
using detops::focal_loss::Reduction;
using detops::focal_loss::same_shape;

// boxes1 and boxes2: floating, one dtype, one device, one shape [..., 4].
inline void check_loss_boxes(const char* op, const Tensor& boxes1, const Tensor& boxes2) {
  check_defined(op, "boxes1", boxes1);
  check_defined(op, "boxes2", boxes2);
  check(boxes1.dim() >= 1 && boxes1.size(boxes1.dim() - 1) == 4, op,
        "boxes1 must have shape [..., 4] in (x1, y1, x2, y2) format, got shape ",
        shape_str(boxes1));
  check_floating(op, "boxes1", boxes1);
  check_floating(op, "boxes2", boxes2);
  check_same_dtype(op, "boxes1", boxes1, "boxes2", boxes2);
  check_same_device(op, "boxes1", boxes1, "boxes2", boxes2);
  check(same_shape(boxes1, boxes2), op, "boxes2 must have the shape of boxes1 ", shape_str(boxes1),
        ", got ", shape_str(boxes2));
}

// The dtype of the loss: narrow boxes give float32.
inline ScalarType loss_dtype(ScalarType boxes) {
  return boxes == ScalarType::Half || boxes == ScalarType::BFloat16 ? ScalarType::Float : boxes;
}

// The shape of the unreduced loss: the boxes' shape without its last dimension.
inline std::vector<int64_t> pair_shape(const Tensor& boxes) {
  std::vector<int64_t> shape;
  for (int64_t d = 0; d + 1 < boxes.dim(); ++d) shape.push_back(boxes.size(d));
  return shape;
}

inline void check_loss_grad(const char* op, const Tensor& grad, const Tensor& boxes1,
                            Reduction reduction) {
  check_defined(op, "grad", grad);
  const ScalarType want = loss_dtype(boxes1.scalar_type());
  check(grad.scalar_type() == want, op, "grad must have dtype ", dtype_name(want),
        " (the loss's), got ", dtype_name(grad.scalar_type()));
  check_same_device(op, "boxes1", boxes1, "grad", grad);
  if (reduction == Reduction::kNone) {
    const std::vector<int64_t> want_shape = pair_shape(boxes1);
    bool ok = grad.dim() == static_cast<int64_t>(want_shape.size());
    for (int64_t d = 0; ok && d < grad.dim(); ++d) ok = grad.size(d) == want_shape[d];
    check(ok, op, "grad must have the shape of boxes1 without its last dimension (reduction ",
          "'none'), got ", shape_str(grad), " for boxes1 of shape ", shape_str(boxes1));
  } else {
    check(grad.dim() == 0, op,
          "grad must be a 0-dim tensor (reduction 'mean' or 'sum'), got shape ", shape_str(grad));
  }
}

}  // namespace detops::box_iou_loss
