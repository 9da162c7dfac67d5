// Argument checks of multi_level_roi_align, shared by its CPU and CUDA entry points.
#pragma once

#include <string>
#include <vector>

#include "roi_checks.h"

namespace detops::roi {

inline void check_levels(const char* op, const std::vector<Tensor>& features,
                         const std::vector<double>& scales, const Tensor& rois,
                         const Tensor& levels, int64_t pooled_h, int64_t pooled_w,
                         int64_t sampling_ratio, size_t max_levels) {
  check(!features.empty(), op, "features must hold at least one feature map");
  check(features.size() <= max_levels, op, "at most ", max_levels,
        " feature maps are supported here, got ", features.size());
  check_output_size(op, pooled_h, pooled_w);
  check_sampling_ratio(op, sampling_ratio);
  check(scales.size() == features.size(), op, "spatial_scales must have one entry per feature ",
        "map: ", features.size(), " maps but ", scales.size(), " scales");
  for (size_t l = 0; l < features.size(); ++l) {
    check_input(op, features[l]);
    check(features[l].size(0) == features[0].size(0) && features[l].size(1) == features[0].size(1),
          op, "features[", l, "] must have the batch size and channels of features[0] ",
          shape_str(features[0]), ", got ", shape_str(features[l]));
    const std::string name = "features[" + std::to_string(l) + "]";
    check_same_dtype(op, "features[0]", features[0], name.c_str(), features[l]);
    check_same_device(op, "features[0]", features[0], name.c_str(), features[l]);
  }
  check_rois(op, "features[0]", features[0], rois);
  check_defined(op, "levels", levels);
  check(levels.dim() == 1 && levels.size(0) == rois.size(0), op,
        "levels must be a 1-D tensor with one level per RoI (", rois.size(0), "), got shape ",
        shape_str(levels));
  check(levels.scalar_type() == ScalarType::Long, op, "levels must be an int64 tensor, got ",
        dtype_name(levels.scalar_type()));
  check_same_device(op, "rois", rois, "levels", levels);
}

// multi_level_roi_align's backward: per-level sizes and the shared arguments.
inline void check_levels_backward(const char* op, const Tensor& grad, const Tensor& rois,
                                  const Tensor& levels, const std::vector<double>& scales,
                                  const std::vector<int64_t>& heights,
                                  const std::vector<int64_t>& widths, int64_t batch,
                                  int64_t channels, int64_t pooled_h, int64_t pooled_w,
                                  int64_t sampling_ratio, size_t max_levels) {
  check(!scales.empty() && scales.size() <= max_levels && heights.size() == scales.size() &&
            widths.size() == scales.size(),
        op, "spatial_scales, heights and widths must have one entry per level (1 to ", max_levels,
        " levels), got ", scales.size(), ", ", heights.size(), " and ", widths.size());
  for (size_t l = 0; l < scales.size(); ++l) {
    check_backward(op, grad, rois, {pooled_h, pooled_w, sampling_ratio, Channels::kSame},
                   {batch, channels, heights[l], widths[l]});
  }
  check(levels.dim() == 1 && levels.size(0) == rois.size(0) &&
            levels.scalar_type() == ScalarType::Long,
        op, "levels must be an int64 tensor of shape [", rois.size(0), "]");
}

// A RoI whose level is kNoLevel is pooled from no map: its output row is zero and it gets
// no gradient. MultiScaleRoIAlign maps boxes with a NaN or negative area there, and boxes
// of levels it has no feature map for, as torchvision's pooler leaves those rows zero.
constexpr int64_t kNoLevel = -1;

// Level values (contiguous, on the host) must index the feature list or be kNoLevel.
inline void check_level_values(const char* op, const int64_t* data, int64_t k, int64_t num_levels) {
  for (int64_t i = 0; i < k; ++i) {
    check(data[i] == kNoLevel || has_level(data[i], num_levels), op, "levels[", i,
          "] must be in [0, ", num_levels - 1, "] or -1 (no level: a zero row), got ", data[i]);
  }
}

}  // namespace detops::roi
