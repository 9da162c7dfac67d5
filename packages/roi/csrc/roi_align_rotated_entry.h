// The entry points of roi_align_rotated and its backward, shared by the CPU and CUDA
// kernels: roi_checks.h's checks (with rotated rois of six columns), and roi_entry.h's
// device guard, dtype dispatch and allocation. As for the other RoI ops, batch indices are
// checked on the host by the CPU backend and give a zero row (no gradient) on CUDA.
#pragma once

#include <detops/backend.h>
#include <detops/contiguous.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cstdint>

#include "roi_align_rotated_math.h"
#include "roi_checks.h"
#include "roi_entry.h"

namespace detops::roi {

struct RotatedArgs : RoiArgs {
  bool aligned;
};

template <typename T, typename S>
inline RotatedBox<T> rotated_box_of(const S* roi, const RotatedArgs& a) {
  return rotated_box(static_cast<T>(roi[1]), static_cast<T>(roi[2]), static_cast<T>(roi[3]),
                     static_cast<T>(roi[4]), static_cast<T>(roi[5]), static_cast<T>(a.scale),
                     a.aligned, a.pooled_h, a.pooled_w, a.sampling_ratio);
}

// Backend (detops/backend.h) provides
//   template <typename S> static void forward(const RotatedArgs&, const Tensor& input,
//       Tensor& out);                              // [K, C, pooled_h, pooled_w]
//   template <typename S> static void backward(const RotatedArgs&, const Tensor& grad,
//       Tensor& grad_input);                       // [N, C, H, W]
// Outputs are uninitialised and never empty: the backend writes every element.
template <typename Backend>
struct RoiAlignRotatedEntry {
  static_assert(is_backend<Backend>());

  static Tensor roi_align_rotated(Tensor input, Tensor rois, double spatial_scale, int64_t pooled_h,
                                  int64_t pooled_w, int64_t sampling_ratio, bool aligned) {
    const char* op = "detops.roi_align_rotated";
    check_forward(op, input, rois,
                  {pooled_h, pooled_w, sampling_ratio, Channels::kSame, kRotatedRois});
    const RotatedArgs a{{op, detops::contiguous(rois), input.size(0), input.size(1), input.size(2),
                         input.size(3), pooled_h, pooled_w, sampling_ratio, spatial_scale},
                        aligned};
    return single_map_forward<Backend>(a, input, a.channels, [&](auto tag, Tensor& out) {
      using S = typename decltype(tag)::type;
      Backend::template forward<S>(a, input, out);
    });
  }

  static Tensor roi_align_rotated_backward(Tensor grad, Tensor rois, double spatial_scale,
                                           int64_t pooled_h, int64_t pooled_w, int64_t batch,
                                           int64_t channels, int64_t height, int64_t width,
                                           int64_t sampling_ratio, bool aligned,
                                           bool deterministic) {
    const char* op = "detops._roi_align_rotated_backward";
    check_backward(op, grad, rois,
                   {pooled_h, pooled_w, sampling_ratio, Channels::kSame, kRotatedRois},
                   {batch, channels, height, width});
    const RotatedArgs a{{op, detops::contiguous(rois), batch, channels, height, width, pooled_h,
                         pooled_w, sampling_ratio, spatial_scale, deterministic},
                        aligned};
    return single_map_backward<Backend>(a, grad, [&](auto tag, Tensor& grad_input) {
      using S = typename decltype(tag)::type;
      Backend::template backward<S>(a, grad, grad_input);
    });
  }
};

}  // namespace detops::roi
