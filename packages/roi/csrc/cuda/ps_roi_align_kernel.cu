// CUDA kernels of detops::ps_roi_align and detops::_ps_roi_align_backward: one thread per
// output bin, reading input channel ps_channel(c_out, ph, pw); the backward scatters with
// atomics into a float32 (float64) buffer.
#include <torch/csrc/stable/library.h>

#include "cuda/roi_cuda.cuh"

namespace detops::roi::cuda {
namespace {

struct Params {
  int64_t rois, channels_out, pooled_h, pooled_w, sampling_ratio, height, width;
};

template <typename S, typename T>
__device__ AlignBox<T> ps_box(const S* roi, T scale, const Params& p) {
  return align_box(static_cast<T>(roi[1]), static_cast<T>(roi[2]), static_cast<T>(roi[3]),
                   static_cast<T>(roi[4]), scale, T(0.5), false, p.pooled_h, p.pooled_w,
                   p.sampling_ratio);
}

template <typename S, typename T>
__global__ void forward_kernel(const S* __restrict__ input, Strides st, const S* __restrict__ rois,
                               T scale, Params p, S* __restrict__ out) {
  DETOPS_CUDA_LOOP(i, p.rois * p.channels_out * p.pooled_h * p.pooled_w) {
    const BinIndex at = decode_bin(i, p.channels_out, p.pooled_h, p.pooled_w);
    const int64_t r = at.roi, co = at.channel, ph = at.ph, pw = at.pw;
    const S* roi = rois + 5 * r;
    const AlignBox<T> box = ps_box(roi, scale, p);
    const S* plane =
        input + batch_of(roi) * st.n + ps_channel(co, ph, pw, p.pooled_h, p.pooled_w) * st.c;
    T acc = T(0);
    for_each_sample(box, ph, pw, p.height, p.width, [&](const Tap<T>& ty, const Tap<T>& tx) {
      acc += interpolate(plane, st, ty, tx);
    });
    out[i] = static_cast<S>(acc / box.count);
  }
}

template <typename S, typename T>
__global__ void backward_kernel(const S* __restrict__ grad, Strides gs, const S* __restrict__ rois,
                                T scale, Params p, int64_t channels, T* __restrict__ grad_input) {
  DETOPS_CUDA_LOOP(i, p.rois * p.channels_out * p.pooled_h * p.pooled_w) {
    const BinIndex at = decode_bin(i, p.channels_out, p.pooled_h, p.pooled_w);
    const int64_t r = at.roi, co = at.channel, ph = at.ph, pw = at.pw;
    const S* roi = rois + 5 * r;
    const AlignBox<T> box = ps_box(roi, scale, p);
    const int64_t c_in = ps_channel(co, ph, pw, p.pooled_h, p.pooled_w);
    T* plane = grad_input + (batch_of(roi) * channels + c_in) * p.height * p.width;
    const T g = static_cast<T>(grad[r * gs.n + co * gs.c + ph * gs.y + pw * gs.x]) / box.count;
    for_each_sample(box, ph, pw, p.height, p.width, [&](const Tap<T>& ty, const Tap<T>& tx) {
      scatter(plane, p.width, ty, tx, g);
    });
  }
}

Tensor ps_roi_align_cuda(Tensor input, Tensor rois_in, double spatial_scale, int64_t pooled_h,
                         int64_t pooled_w, int64_t sampling_ratio) {
  const char* op = "detops.ps_roi_align";
  check_forward(op, input, rois_in, pooled_h, pooled_w, sampling_ratio, true);
  const Params p{rois_in.size(0), input.size(1) / (pooled_h * pooled_w),
                 pooled_h,        pooled_w,
                 sampling_ratio,  input.size(2),
                 input.size(3)};
  return dispatch_floating(input.scalar_type(), op, "input", [&](auto tag) {
    using S = typename decltype(tag)::type;
    using T = acc_t<S>;
    Tensor out = torch::stable::new_empty(input, {p.rois, p.channels_out, pooled_h, pooled_w});
    run_forward<S>(op, input, rois_in, out,
                   [&](const Tensor& rois, unsigned blocks, cudaStream_t stream) {
                     forward_kernel<S, T><<<blocks, kThreads, 0, stream>>>(
                         input.const_data_ptr<S>(), strides_of(input), rois.const_data_ptr<S>(),
                         static_cast<T>(spatial_scale), p, out.mutable_data_ptr<S>());
                   });
    return out;
  });
}

Tensor ps_roi_align_backward_cuda(Tensor grad, Tensor rois_in, double spatial_scale,
                                  int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                                  int64_t batch_size, int64_t channels, int64_t height,
                                  int64_t width) {
  const char* op = "detops._ps_roi_align_backward";
  check_backward(op, grad, rois_in, pooled_h, pooled_w, sampling_ratio, batch_size, channels,
                 height, width, true);
  const Params p{rois_in.size(0),
                 channels / (pooled_h * pooled_w),
                 pooled_h,
                 pooled_w,
                 sampling_ratio,
                 height,
                 width};
  return dispatch_floating(grad.scalar_type(), op, "grad", [&](auto tag) {
    using S = typename decltype(tag)::type;
    using T = acc_t<S>;
    return run_backward<S>(
        op, grad, rois_in, batch_size, channels, height, width,
        [&](const Tensor& rois, T* buffer, unsigned blocks, cudaStream_t stream) {
          backward_kernel<S, T><<<blocks, kThreads, 0, stream>>>(
              grad.const_data_ptr<S>(), strides_of(grad), rois.const_data_ptr<S>(),
              static_cast<T>(spatial_scale), p, channels, buffer);
        });
  });
}

}  // namespace
}  // namespace detops::roi::cuda

STABLE_TORCH_LIBRARY_IMPL(detops, CUDA, m) {
  m.impl("ps_roi_align", TORCH_BOX(&detops::roi::cuda::ps_roi_align_cuda));
  m.impl("_ps_roi_align_backward", TORCH_BOX(&detops::roi::cuda::ps_roi_align_backward_cuda));
}
