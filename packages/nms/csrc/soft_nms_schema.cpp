// Schemas of the detops Soft-NMS ops. Entry points: soft_nms_entry.h; kernels:
// cpu/soft_nms_kernel.cpp, cuda/soft_nms_kernel.cu.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(detops, m) {
  // Soft-NMS: (kept indices in selection order, their decayed scores). method is
  // "gaussian" or "linear".
  m.def(
      "soft_nms(Tensor boxes, Tensor scores, float iou_threshold=0.3, float sigma=0.5, "
      "float score_threshold=0.001, str method=\"gaussian\") -> (Tensor, Tensor)");
  // Soft-NMS per class; kept boxes of all classes by decreasing decayed score.
  m.def(
      "batched_soft_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold=0.3, "
      "float sigma=0.5, float score_threshold=0.001, str method=\"gaussian\") -> (Tensor, Tensor)");
}
