// Schemas of the rotated-box ops (boxes in torchvision's cxcywhr format, r in degrees).
// Entry points: nms_rotated_entry.h; kernels: cpu/nms_rotated_kernel.cpp, cuda/nms_rotated_kernel.cu;
// geometry: nms_rotated_math.h.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(detops, m) {
  // Pairwise IoU [N, M] of boxes1 [N, 5] and boxes2 [M, 5], in the boxes' dtype.
  m.def("box_iou_rotated(Tensor boxes1, Tensor boxes2) -> Tensor");
  // Greedy NMS of rotated boxes [N, 5]: kept indices in decreasing score order.
  m.def("nms_rotated(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  // Same, with boxes of different idxs (classes) never suppressing each other.
  m.def(
      "batched_nms_rotated(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> "
      "Tensor");
}
