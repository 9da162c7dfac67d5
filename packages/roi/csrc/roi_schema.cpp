// Schemas of the detops RoI ops. Entry points: roi_entry.h; CPU kernels: cpu/*.cpp; CUDA
// kernels: cuda/*.cu. roi_align_rotated: roi_align_rotated_schema.cpp.
// Backward ops take the forward's sizes so that they need not keep the input alive, and
// `deterministic` (torch.are_deterministic_algorithms_enabled() when autograd calls them):
// the CUDA kernels then add with the order-free fixed-point sum of detops/scatter_add.cuh
// instead of float atomics; the CPU kernels are deterministic either way.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(detops, m) {
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
      "int sampling_ratio, bool aligned, bool deterministic=False) -> Tensor");
  // Returns (output, argmax): argmax is the int32 index y * W + x of each bin's maximum in
  // its input plane, -1 for an empty bin.
  m.def(
      "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width) -> (Tensor, Tensor)");
  m.def(
      "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
      "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
      "SymInt height, SymInt width, bool deterministic=False) -> Tensor");
  m.def(
      "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio) -> Tensor");
  m.def(
      "_ps_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, "
      "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, "
      "SymInt channels, SymInt height, SymInt width, bool deterministic=False) -> Tensor");
  m.def(
      "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width) -> Tensor");
  m.def(
      "_ps_roi_pool_backward(Tensor grad, Tensor rois, float spatial_scale, "
      "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
      "SymInt height, SymInt width, bool deterministic=False) -> Tensor");
  // roi_align of every RoI on its own feature map: rois[k] is pooled from
  // features[levels[k]] with spatial_scales[levels[k]]. All maps share N, C and dtype.
  m.def(
      "multi_level_roi_align(Tensor[] features, float[] spatial_scales, Tensor rois, "
      "Tensor levels, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, "
      "bool aligned) -> Tensor");
  // One gradient per level; heights[l] x widths[l] is the size of level l.
  m.def(
      "_multi_level_roi_align_backward(Tensor grad, Tensor rois, Tensor levels, "
      "float[] spatial_scales, SymInt[] heights, SymInt[] widths, SymInt batch_size, "
      "SymInt channels, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, "
      "bool aligned, bool deterministic=False) -> Tensor[]");
}
