// CUDA kernels of detops::ps_roi_align and detops::_ps_roi_align_backward: one thread per
// output bin, reading input channel ps_channel(c_out, ph, pw); the backward scatters into
// a float32 (float64) accumulator (roi_cuda.cuh's accumulate_grad). A RoI with an invalid batch
// index gets a zero row and no gradient.
#include <torch/csrc/stable/library.h>

#include "cuda/roi_cuda.cuh"
#include "roi_entry.h"

namespace detops::roi::cuda {
namespace {

struct Params {
  int64_t rois, batch, channels_out, pooled_h, pooled_w, sampling_ratio, height, width;
};

template <typename S, typename T>
__device__ __forceinline__ AlignBox<T> ps_box(const S* roi, T scale, const Params& p) {
  return ps_roi_align_box(static_cast<T>(roi[1]), static_cast<T>(roi[2]), static_cast<T>(roi[3]),
                          static_cast<T>(roi[4]), scale, p.pooled_h, p.pooled_w, p.sampling_ratio);
}

template <typename S, typename T>
__global__ void forward_kernel(const S* __restrict__ input, Strides st, const S* __restrict__ rois,
                               T scale, Params p, S* __restrict__ out) {
  DETOPS_CUDA_LOOP(i, p.rois * p.channels_out * p.pooled_h * p.pooled_w) {
    const BinIndex at = decode_bin(i, p.channels_out, p.pooled_h, p.pooled_w);
    const S* roi = rois + 5 * at.roi;
    const int64_t b = batch_index(roi[0], p.batch);
    if (b < 0) {
      out[i] = S(0);
      continue;
    }
    const AlignBox<T> box = ps_box(roi, scale, p);
    const S* plane =
        input + st.plane(b, ps_channel(at.channel, at.ph, at.pw, p.pooled_h, p.pooled_w));
    T acc = T(0);
    for_each_sample(box, at.ph, at.pw, p.height, p.width, [&](const Tap<T>& ty, const Tap<T>& tx) {
      acc += bilinear(plane, st.y, st.x, ty, tx);
    });
    out[i] = static_cast<S>(acc / box.count);
  }
}

template <typename S, typename T, typename Add>
__global__ void backward_kernel(const S* __restrict__ grad, Strides gs, const S* __restrict__ rois,
                                T scale, Params p, T* __restrict__ grad_input, Add add) {
  DETOPS_CUDA_LOOP(i, p.rois * p.channels_out * p.pooled_h * p.pooled_w) {
    const BinIndex at = decode_bin(i, p.channels_out, p.pooled_h, p.pooled_w);
    const S* roi = rois + 5 * at.roi;
    const int64_t b = batch_index(roi[0], p.batch);
    if (b < 0) continue;
    const AlignBox<T> box = ps_box(roi, scale, p);
    const int64_t channels = p.channels_out * p.pooled_h * p.pooled_w;
    const int64_t c_in = ps_channel(at.channel, at.ph, at.pw, p.pooled_h, p.pooled_w);
    T* plane = grad_input + (b * channels + c_in) * p.height * p.width;
    const T g =
        static_cast<T>(grad[at.roi * gs.n + at.channel * gs.c + at.ph * gs.y + at.pw * gs.x]) /
        box.count;
    for_each_sample(box, at.ph, at.pw, p.height, p.width, [&](const Tap<T>& ty, const Tap<T>& tx) {
      scatter(plane, p.width, ty, tx, g, add);
    });
  }
}

Params params_of(const RoiArgs& a) {
  return {a.num_rois(), a.batch,          a.channels_out(), a.pooled_h,
          a.pooled_w,   a.sampling_ratio, a.height,         a.width};
}

struct PsRoiAlignBackend : RoiCudaBackend {
  template <typename S>
  static void forward(const RoiArgs& a, const Tensor& input, Tensor& out) {
    using T = acc_t<S>;
    detops::cuda::launch<forward_kernel<S, T>>(
        a.op, detops::cuda::over(out.numel(), detops::cuda::current_stream(input)),
        input.const_data_ptr<S>(), strides_of(input), a.rois.const_data_ptr<S>(),
        static_cast<T>(a.scale), params_of(a), out.mutable_data_ptr<S>());
  }

  template <typename S>
  static void backward(const RoiArgs& a, const Tensor& grad, Tensor& grad_input) {
    using T = acc_t<S>;
    accumulate_grad<S>(a, grad_input, [&](auto add, T* accumulator) {
      detops::cuda::launch<backward_kernel<S, T, decltype(add)>>(
          a.op, detops::cuda::over(grad.numel(), detops::cuda::current_stream(grad)),
          grad.const_data_ptr<S>(), strides_of(grad), a.rois.const_data_ptr<S>(),
          static_cast<T>(a.scale), params_of(a), accumulator, add);
    });
  }
};

}  // namespace
}  // namespace detops::roi::cuda

DETOPS_CUDA_LIBRARY_IMPL(m) {
  using Entry = detops::roi::PsRoiAlignEntry<detops::roi::cuda::PsRoiAlignBackend>;
  m.impl("ps_roi_align", TORCH_BOX(&Entry::ps_roi_align));
  m.impl("_ps_roi_align_backward", TORCH_BOX(&Entry::ps_roi_align_backward));
}
