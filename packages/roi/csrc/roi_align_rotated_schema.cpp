// Schemas of roi_align_rotated (rois in torchvision's cxcywhr, degrees;
// roi_align_rotated_math.h). Entry points: roi_align_rotated_entry.h; kernels:
// cpu/roi_align_rotated_kernel.cpp, cuda/roi_align_rotated_kernel.cu.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(detops, m) {
  // rois [K, 6]: (batch index, cx, cy, w, h, r).
  m.def(
      "roi_align_rotated(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "_roi_align_rotated_backward(Tensor grad, Tensor rois, float spatial_scale, "
      "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
      "SymInt height, SymInt width, int sampling_ratio, bool aligned, bool deterministic=False) -> "
      "Tensor");
}
