// CPU kernels of detops::multi_level_roi_align and its backward: roi_align of each RoI on
// its own FPN level in one pass (cpu/align_kernel.h), instead of one call per level and a
// scatter. Results equal per-level roi_align.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <vector>

#include "cpu/align_kernel.h"
#include "level_checks.h"

namespace detops::roi::cpu {
namespace {

std::vector<int64_t> host_levels(const char* op, const Tensor& levels, int64_t num_levels) {
  const Tensor l = torch::stable::contiguous(levels);
  return read_levels(op, l.const_data_ptr<int64_t>(), l.size(0), num_levels);
}

Tensor multi_level_cpu(std::vector<Tensor> features, std::vector<double> scales, Tensor rois,
                       Tensor levels, int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                       bool aligned) {
  const char* op = "detops.multi_level_roi_align";
  check_levels(op, features, scales, rois, levels, pooled_h, pooled_w, sampling_ratio,
               features.size());
  const std::vector<int64_t> level = host_levels(op, levels, static_cast<int64_t>(features.size()));
  const AlignParams p{pooled_h, pooled_w, sampling_ratio, aligned};
  return dispatch_floating(features[0].scalar_type(), op, "features", [&](auto tag) {
    using S = typename decltype(tag)::type;
    return align_forward<S>(op, features, scales, rois, &level, p);
  });
}

std::vector<Tensor> multi_level_backward_cpu(Tensor grad, Tensor rois, Tensor levels,
                                             std::vector<double> scales,
                                             std::vector<int64_t> heights,
                                             std::vector<int64_t> widths, int64_t batch_size,
                                             int64_t channels, int64_t pooled_h, int64_t pooled_w,
                                             int64_t sampling_ratio, bool aligned) {
  const char* op = "detops._multi_level_roi_align_backward";
  check_levels_backward(op, grad, rois, levels, scales, heights, widths, batch_size, channels,
                        pooled_h, pooled_w, sampling_ratio, std::max<size_t>(scales.size(), 1));
  std::vector<LevelShape> shapes;
  for (size_t l = 0; l < scales.size(); ++l) shapes.push_back({heights[l], widths[l], scales[l]});
  const std::vector<int64_t> level = host_levels(op, levels, static_cast<int64_t>(scales.size()));
  const AlignParams p{pooled_h, pooled_w, sampling_ratio, aligned};
  return dispatch_floating(grad.scalar_type(), op, "grad", [&](auto tag) {
    using S = typename decltype(tag)::type;
    return align_backward<S>(op, grad, rois, &level, shapes, batch_size, channels, p);
  });
}

}  // namespace
}  // namespace detops::roi::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  m.impl("multi_level_roi_align", TORCH_BOX(&detops::roi::cpu::multi_level_cpu));
  m.impl("_multi_level_roi_align_backward", TORCH_BOX(&detops::roi::cpu::multi_level_backward_cpu));
}
