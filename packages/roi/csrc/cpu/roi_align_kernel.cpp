// CPU kernels of detops::roi_align and detops::_roi_align_backward (see cpu/align_kernel.h).
#include <torch/csrc/stable/library.h>

#include "cpu/align_kernel.h"
#include "roi_checks.h"

namespace detops::roi::cpu {
namespace {

Tensor roi_align_cpu(Tensor input, Tensor rois, double spatial_scale, int64_t pooled_h,
                     int64_t pooled_w, int64_t sampling_ratio, bool aligned) {
  const char* op = "detops.roi_align";
  check_forward(op, input, rois, pooled_h, pooled_w, sampling_ratio, false);
  const AlignParams p{pooled_h, pooled_w, sampling_ratio, aligned};
  return dispatch_floating(input.scalar_type(), op, "input", [&](auto tag) {
    using S = typename decltype(tag)::type;
    return align_forward<S>(op, {input}, {spatial_scale}, rois, nullptr, p);
  });
}

Tensor roi_align_backward_cpu(Tensor grad, Tensor rois, double spatial_scale, int64_t pooled_h,
                              int64_t pooled_w, int64_t batch_size, int64_t channels,
                              int64_t height, int64_t width, int64_t sampling_ratio, bool aligned) {
  const char* op = "detops._roi_align_backward";
  check_backward(op, grad, rois, pooled_h, pooled_w, sampling_ratio, batch_size, channels, height,
                 width, false);
  const AlignParams p{pooled_h, pooled_w, sampling_ratio, aligned};
  return dispatch_floating(grad.scalar_type(), op, "grad", [&](auto tag) {
    using S = typename decltype(tag)::type;
    return align_backward<S>(op, grad, rois, nullptr, {{height, width, spatial_scale}}, batch_size,
                             channels, p)[0];
  });
}

}  // namespace
}  // namespace detops::roi::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  m.impl("roi_align", TORCH_BOX(&detops::roi::cpu::roi_align_cpu));
  m.impl("_roi_align_backward", TORCH_BOX(&detops::roi::cpu::roi_align_backward_cpu));
}
