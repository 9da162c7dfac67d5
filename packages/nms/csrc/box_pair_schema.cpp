// Schemas of the pairwise box-pair measures (boxes in (x1, y1, x2, y2) format) and their
// backward ops. Entry points: box_pair_entry.h; kernels: cpu/box_pair_iou_kernel.cpp,
// cuda/box_pair_iou_kernel.cu; per-pair math: core's detops/box_pair_math.h.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(detops, m) {
  // [N, M] for boxes1 [N, 4] and boxes2 [M, 4]; float32 for float16 / bfloat16 boxes (as
  // torchvision's, which upcast), else the boxes' dtype.
  m.def("generalized_box_iou(Tensor boxes1, Tensor boxes2) -> Tensor");
  m.def("distance_box_iou(Tensor boxes1, Tensor boxes2, float eps=1e-07) -> Tensor");
  m.def("complete_box_iou(Tensor boxes1, Tensor boxes2, float eps=1e-07) -> Tensor");
  // Gradients of boxes1 and boxes2 (in their dtype) for the gradient `grad` of the result.
  m.def(
      "_generalized_box_iou_backward(Tensor grad, Tensor boxes1, Tensor boxes2) -> "
      "(Tensor, Tensor)");
  m.def(
      "_distance_box_iou_backward(Tensor grad, Tensor boxes1, Tensor boxes2, float eps) -> "
      "(Tensor, Tensor)");
  m.def(
      "_complete_box_iou_backward(Tensor grad, Tensor boxes1, Tensor boxes2, float eps) -> "
      "(Tensor, Tensor)");
}
