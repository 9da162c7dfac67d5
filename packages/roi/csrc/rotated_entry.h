// The entry points of roi_align_rotated and its backward, shared by the CPU and CUDA
// kernels: checks (roi_checks.h's, with rotated rois of six columns), dtype dispatch and
// allocation. As for the other RoI ops, batch indices are checked on the host by the CPU
// backend and give a zero row (no gradient) on CUDA.
#pragma once

#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cstdint>

#include "roi_checks.h"
#include "roi_entry.h"
#include "rotated_geometry.h"

namespace detops::roi {

inline void check_rotated_rois(const char* op, const char* like_name, const Tensor& like,
                               const Tensor& rois) {
  check_defined(op, "rois", rois);
  check(rois.dim() == 2 && rois.size(1) == 6, op,
        "rois must be a 2-D tensor of shape [K, 6] holding (batch index, cx, cy, w, h, r), "
        "got shape ",
        shape_str(rois));
  check_same_dtype(op, like_name, like, "rois", rois);
  check_same_device(op, like_name, like, "rois", rois);
}

template <typename S>
void check_rotated_batch_indices(const char* op, const S* rois, int64_t num_rois, int64_t batch) {
  for (int64_t k = 0; k < num_rois; ++k) {
    if (batch_index(rois[6 * k], batch) < 0) {
      fail(op, "rois[", k, ", 0] is the batch index of RoI ", k, " and must be an integer in [0, ",
           batch - 1, "] (input has ", batch, " images), got ", static_cast<double>(rois[6 * k]));
    }
  }
}

struct RotatedArgs {
  const char* op;
  Tensor rois;  // [K, 6], contiguous
  int64_t batch, channels, height, width;
  int64_t pooled_h, pooled_w, sampling_ratio;
  double scale;
  bool aligned;

  int64_t num_rois() const { return rois.size(0); }
};

template <typename T, typename S>
inline RotatedBox<T> rotated_box_of(const S* roi, const RotatedArgs& a) {
  return rotated_box(static_cast<T>(roi[1]), static_cast<T>(roi[2]), static_cast<T>(roi[3]),
                     static_cast<T>(roi[4]), static_cast<T>(roi[5]), static_cast<T>(a.scale),
                     a.aligned, a.pooled_h, a.pooled_w, a.sampling_ratio);
}

// Backend provides kChecksDataOnHost and
//   template <typename S> static void forward(const RotatedArgs&, const Tensor& input, Tensor&
//   out); template <typename S> static void backward(const RotatedArgs&, const Tensor& grad,
//   Tensor& grad_input);
// Outputs are uninitialised and never empty: the backend writes every element.
template <typename Backend>
struct RotatedAlignEntry {
  static Tensor forward(Tensor input, Tensor rois, double spatial_scale, int64_t pooled_h,
                        int64_t pooled_w, int64_t sampling_ratio, bool aligned) {
    const char* op = "detops.roi_align_rotated";
    check_input(op, input);
    check_rotated_rois(op, "input", input, rois);
    check_output_size(op, pooled_h, pooled_w);
    check_sampling_ratio(op, sampling_ratio);
    const RotatedArgs a{op,
                        torch::stable::contiguous(rois),
                        input.size(0),
                        input.size(1),
                        input.size(2),
                        input.size(3),
                        pooled_h,
                        pooled_w,
                        sampling_ratio,
                        spatial_scale,
                        aligned};
    return dispatch_floating(input.scalar_type(), op, "input", [&](auto tag) {
      using S = typename decltype(tag)::type;
      if constexpr (Backend::kChecksDataOnHost) {
        check_rotated_batch_indices(op, a.rois.const_data_ptr<S>(), a.num_rois(), a.batch);
      }
      Tensor out = new_output(input, {a.num_rois(), a.channels, pooled_h, pooled_w});
      if (out.numel() > 0) Backend::template forward<S>(a, input, out);
      return out;
    });
  }

  static Tensor backward(Tensor grad, Tensor rois, double spatial_scale, int64_t pooled_h,
                         int64_t pooled_w, int64_t batch, int64_t channels, int64_t height,
                         int64_t width, int64_t sampling_ratio, bool aligned) {
    const char* op = "detops._roi_align_rotated_backward";
    check_output_size(op, pooled_h, pooled_w);
    check_sampling_ratio(op, sampling_ratio);
    check_input_shape(op, batch, channels, height, width);
    check_rotated_rois(op, "grad", grad, rois);
    check_grad(op, grad, rois, channels, pooled_h, pooled_w);
    const RotatedArgs a{op,
                        torch::stable::contiguous(rois),
                        batch,
                        channels,
                        height,
                        width,
                        pooled_h,
                        pooled_w,
                        sampling_ratio,
                        spatial_scale,
                        aligned};
    return dispatch_floating(grad.scalar_type(), op, "grad", [&](auto tag) {
      using S = typename decltype(tag)::type;
      if constexpr (Backend::kChecksDataOnHost) {
        check_rotated_batch_indices(op, a.rois.const_data_ptr<S>(), a.num_rois(), a.batch);
      }
      if (grad.numel() == 0)
        return torch::stable::new_zeros(grad, {batch, channels, height, width});
      Tensor grad_input = new_output(grad, {batch, channels, height, width});
      Backend::template backward<S>(a, grad, grad_input);
      return grad_input;
    });
  }
};

}  // namespace detops::roi
