// Argument checks shared by the CPU and CUDA entry points of the RoI ops. Every message
// names the op and the argument and surfaces in Python as a RuntimeError.
#pragma once

#include <detops/checks.h>

#include <cstdint>
#include <string>
#include <vector>

#include "roi_math.h"

namespace detops::roi {

// Positive sampling ratios above this are rejected: a bin would hold over a million samples.
constexpr int64_t kMaxSamplingRatio = 1024;

inline void check_input(const char* op, const Tensor& input) {
  check_defined(op, "input", input);
  check(input.dim() == 4, op, "input must be a 4-D tensor of shape [N, C, H, W], got shape ",
        shape_str(input));
  check_floating(op, "input", input);
}

// What a row of rois holds: its width, and its fields as the messages name them.
struct RoiLayout {
  int64_t columns;
  const char* fields;
};
inline constexpr RoiLayout kBoxRois{5, "(batch index, x1, y1, x2, y2)"};
inline constexpr RoiLayout kRotatedRois{6, "(batch index, cx, cy, w, h, r)"};

// `like` is the tensor rois must match in dtype and device, named `like_name` in messages.
inline void check_rois(const char* op, const char* like_name, const Tensor& like,
                       const Tensor& rois, const RoiLayout& layout = kBoxRois) {
  check_defined(op, "rois", rois);
  check_assertion(rois.dim() == 2 && rois.size(1) == layout.columns, op,
                  "rois must be a 2-D tensor of shape [K, ", layout.columns, "] holding ",
                  layout.fields, ", got shape ", shape_str(rois));
  check_same_dtype(op, like_name, like, "rois", rois);
  check_same_device(op, like_name, like, "rois", rois);
}

inline void check_output_size(const char* op, int64_t pooled_h, int64_t pooled_w) {
  check(pooled_h >= 1 && pooled_w >= 1, op,
        "output_size (pooled_height, pooled_width) must be at least 1, got (", pooled_h, ", ",
        pooled_w, ")");
  int64_t bins = 0;
  check(mul_fits(pooled_h, pooled_w, bins), op, "output_size (", pooled_h, ", ", pooled_w,
        ") has more than 2^63 - 1 bins");
}

inline void check_sampling_ratio(const char* op, int64_t sampling_ratio) {
  check(sampling_ratio <= kMaxSamplingRatio, op,
        "sampling_ratio must be <= 0 (adaptive) or between 1 and ", kMaxSamplingRatio, ", got ",
        sampling_ratio);
}

inline void check_ps_channels(const char* op, int64_t channels, int64_t pooled_h,
                              int64_t pooled_w) {
  check(channels % (pooled_h * pooled_w) == 0, op, "input channels (", channels,
        ") must be divisible by output_size[0] * output_size[1] (", pooled_h * pooled_w, ")");
}

// Batch indices (column 0 of contiguous rois of `columns` columns, on the host) must be
// integers in [0, batch_size): the predicate the CUDA kernels apply per RoI (batch_index).
template <typename S>
void check_batch_indices(const char* op, const S* rois, int64_t num_rois, int64_t columns,
                         int64_t batch_size) {
  for (int64_t k = 0; k < num_rois; ++k) {
    if (batch_index(rois[columns * k], batch_size) < 0) {
      fail(op, "rois[", k, ", 0] is the batch index of RoI ", k, " and must be an integer in [0, ",
           batch_size - 1, "] (input has ", batch_size, " images), got ",
           static_cast<double>(rois[columns * k]));
    }
  }
}

// Backward ops: grad must be [K, C_out, pooled_h, pooled_w] for K rois.
inline void check_grad(const char* op, const Tensor& grad, const Tensor& rois, int64_t channels,
                       int64_t pooled_h, int64_t pooled_w) {
  check_defined(op, "grad", grad);
  check(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels &&
            grad.size(2) == pooled_h && grad.size(3) == pooled_w,
        op, "grad must have shape [", rois.size(0), ", ", channels, ", ", pooled_h, ", ", pooled_w,
        "], got ", shape_str(grad));
  check_floating(op, "grad", grad);
}

inline void check_input_shape(const char* op, int64_t batch, int64_t channels, int64_t height,
                              int64_t width) {
  check(batch >= 0 && channels >= 0 && height >= 0 && width >= 0, op,
        "input sizes must be non-negative, got [", batch, ", ", channels, ", ", height, ", ", width,
        "]");
}

// How an op's output channels relate to its input channels.
enum class Channels {
  kSame,               // roi_align, roi_pool: output channel c reads input channel c
  kPositionSensitive,  // ps_*: C / (pooled_h * pooled_w) outputs, one input channel per bin
};

// What the forward and backward checks need to know of an op besides its tensors.
struct OpSpec {
  int64_t pooled_h, pooled_w;
  int64_t sampling_ratio;  // pooling ops, which sample no points, use kNoSampling
  Channels channels;
  RoiLayout layout = kBoxRois;
};

// The sampling_ratio of the pooling ops: it passes check_sampling_ratio.
constexpr int64_t kNoSampling = 0;

// The shape [batch, channels, height, width] of a backward op's input (and gradient).
struct InputShape {
  int64_t batch, channels, height, width;
};

// Everything a forward entry point checks.
inline void check_forward(const char* op, const Tensor& input, const Tensor& rois,
                          const OpSpec& spec) {
  check_input(op, input);
  check_rois(op, "input", input, rois, spec.layout);
  check_output_size(op, spec.pooled_h, spec.pooled_w);
  check_sampling_ratio(op, spec.sampling_ratio);
  if (spec.channels == Channels::kPositionSensitive) {
    check_ps_channels(op, input.size(1), spec.pooled_h, spec.pooled_w);
  }
}

// Everything a backward entry point checks.
inline void check_backward(const char* op, const Tensor& grad, const Tensor& rois,
                           const OpSpec& spec, const InputShape& in) {
  check_output_size(op, spec.pooled_h, spec.pooled_w);
  check_sampling_ratio(op, spec.sampling_ratio);
  check_input_shape(op, in.batch, in.channels, in.height, in.width);
  const bool ps = spec.channels == Channels::kPositionSensitive;
  if (ps) check_ps_channels(op, in.channels, spec.pooled_h, spec.pooled_w);
  check_rois(op, "grad", grad, rois, spec.layout);
  check_grad(op, grad, rois, ps ? in.channels / (spec.pooled_h * spec.pooled_w) : in.channels,
             spec.pooled_h, spec.pooled_w);
}

// roi_pool stores argmax as int32 plane offsets.
inline void check_plane_fits_int32(const char* op, const Tensor& input) {
  check(input.size(2) * input.size(3) < (int64_t(1) << 31), op,
        "input planes must have fewer than 2^31 elements (argmax is int32), got ",
        shape_str(input));
}

inline void check_argmax(const char* op, const Tensor& argmax, const Tensor& grad) {
  check_defined(op, "argmax", argmax);
  check(argmax.scalar_type() == ScalarType::Int && argmax.dim() == 4 &&
            argmax.size(0) == grad.size(0) && argmax.size(1) == grad.size(1) &&
            argmax.size(2) == grad.size(2) && argmax.size(3) == grad.size(3),
        op, "argmax must be an int32 tensor shaped like grad ", shape_str(grad), ", got ",
        dtype_name(argmax.scalar_type()), " ", shape_str(argmax));
  check_same_device(op, "grad", grad, "argmax", argmax);
}

// ---------------------------------------------------------------------------------------
// multi_level_roi_align and its backward.

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
