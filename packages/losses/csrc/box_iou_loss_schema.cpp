// Schemas of the paired box IoU losses (boxes in (x1, y1, x2, y2) format) and their backward
// ops. Entry points: box_iou_loss_entry.h; kernels: cpu/box_iou_loss_kernel.cpp,
// cuda/box_iou_loss_kernel.cu; per-pair math: core's detops/box_pair_math.h.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(detops, m) {
  // boxes1 and boxes2 of one shape [..., 4] -> the loss of each pair [...] (reduction
  // "none") or its mean or sum (0-dim); float32 for float16 / bfloat16 boxes, as torchvision's
  // (which upcasts), else the boxes' dtype.
  m.def(
      "generalized_box_iou_loss(Tensor boxes1, Tensor boxes2, str reduction=\"none\", "
      "float eps=1e-07) -> Tensor");
  m.def(
      "distance_box_iou_loss(Tensor boxes1, Tensor boxes2, str reduction=\"none\", "
      "float eps=1e-07) -> Tensor");
  m.def(
      "complete_box_iou_loss(Tensor boxes1, Tensor boxes2, str reduction=\"none\", "
      "float eps=1e-07) -> Tensor");
  // Gradients of boxes1 and boxes2 (in their dtype) for the gradient `grad` of the loss.
  m.def(
      "_generalized_box_iou_loss_backward(Tensor grad, Tensor boxes1, Tensor boxes2, "
      "str reduction, float eps) -> (Tensor, Tensor)");
  m.def(
      "_distance_box_iou_loss_backward(Tensor grad, Tensor boxes1, Tensor boxes2, "
      "str reduction, float eps) -> (Tensor, Tensor)");
  m.def(
      "_complete_box_iou_loss_backward(Tensor grad, Tensor boxes1, Tensor boxes2, "
      "str reduction, float eps) -> (Tensor, Tensor)");
}
