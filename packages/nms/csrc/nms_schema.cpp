// Schemas of the detops NMS ops. Entry points: nms_entry.h; kernels: cpu/nms_kernel.cpp,
// cuda/nms_kernel.cu. Soft-NMS: soft_nms_schema.cpp; rotated boxes: nms_rotated_schema.cpp.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(detops, m) {
  // Indices of the boxes kept by greedy NMS, in decreasing score order; with max_output,
  // only the first max_output of them (the kernel stops there).
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold, int? max_output=None) -> Tensor");
  // Same, with boxes of different idxs (classes) never suppressing each other.
  m.def(
      "batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold, "
      "int? max_output=None) -> Tensor");
  // nms (or batched_nms when idxs is given) of each image of boxes [B, N, 4]: rows
  // (image, box) of the kept boxes, image by image; max_output limits each image.
  m.def(
      "nms_per_image(Tensor boxes, Tensor scores, Tensor? idxs, float iou_threshold, "
      "int? max_output=None) -> Tensor");
}
