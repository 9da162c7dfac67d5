// CUDA kernels of detops::roi_align_rotated and its backward: one thread per output bin
// (roi_align_rotated_math.h's samples, in the CPU's order); the backward scatters into a
// float32 (float64) accumulator (roi_cuda.cuh's accumulate_grad). A RoI with an invalid batch index
// gets a zero row and no gradient (roi_entry.h).
#include <torch/csrc/stable/library.h>

#include "cuda/roi_cuda.cuh"
#include "roi_align_rotated_entry.h"

namespace detops::roi::cuda {
namespace {

struct Params {
  int64_t rois, batch, channels, height, width, pooled_h, pooled_w, sampling_ratio;
  bool aligned;
};

template <typename S, typename T>
__device__ __forceinline__ RotatedBox<T> box_of(const S* roi, T scale, const Params& p) {
  return rotated_box(static_cast<T>(roi[1]), static_cast<T>(roi[2]), static_cast<T>(roi[3]),
                     static_cast<T>(roi[4]), static_cast<T>(roi[5]), scale, p.aligned, p.pooled_h,
                     p.pooled_w, p.sampling_ratio);
}

template <typename S, typename T>
__global__ void forward_kernel(const S* __restrict__ input, Strides st, const S* __restrict__ rois,
                               T scale, Params p, S* __restrict__ out) {
  const int64_t total = p.rois * p.channels * p.pooled_h * p.pooled_w;
  DETOPS_CUDA_LOOP(i, total) {
    const BinIndex at = decode_bin(i, p.channels, p.pooled_h, p.pooled_w);
    const S* roi = rois + 6 * at.roi;
    const int64_t b = batch_index(roi[0], p.batch);
    if (b < 0) {
      out[i] = S(0);
      continue;
    }
    const RotatedBox<T> box = box_of(roi, scale, p);
    const S* plane = input + st.plane(b, at.channel);
    T acc = T(0);
    for_each_rotated_sample(
        box, at.ph, at.pw, p.height, p.width,
        [&](const Tap<T>& ty, const Tap<T>& tx) { acc += bilinear(plane, st.y, st.x, ty, tx); });
    out[i] = static_cast<S>(acc / box.count);
  }
}

template <typename S, typename T, typename Add>
__global__ void backward_kernel(const S* __restrict__ grad, Strides gs, const S* __restrict__ rois,
                                T scale, Params p, T* __restrict__ grad_input, Add add) {
  const int64_t total = p.rois * p.channels * p.pooled_h * p.pooled_w;
  DETOPS_CUDA_LOOP(i, total) {
    const BinIndex at = decode_bin(i, p.channels, p.pooled_h, p.pooled_w);
    const S* roi = rois + 6 * at.roi;
    const int64_t b = batch_index(roi[0], p.batch);
    if (b < 0) continue;
    const RotatedBox<T> box = box_of(roi, scale, p);
    T* plane = grad_input + (b * p.channels + at.channel) * p.height * p.width;
    const T g =
        static_cast<T>(grad[at.roi * gs.n + at.channel * gs.c + at.ph * gs.y + at.pw * gs.x]) /
        box.count;
    for_each_rotated_sample(
        box, at.ph, at.pw, p.height, p.width,
        [&](const Tap<T>& ty, const Tap<T>& tx) { scatter(plane, p.width, ty, tx, g, add); });
  }
}

Params params_of(const RotatedArgs& a) {
  return {a.num_rois(), a.batch,    a.channels,       a.height, a.width,
          a.pooled_h,   a.pooled_w, a.sampling_ratio, a.aligned};
}

struct RoiAlignRotatedBackend : RoiCudaBackend {
  template <typename S>
  static void forward(const RotatedArgs& a, const Tensor& input, Tensor& out) {
    using T = acc_t<S>;
    detops::cuda::launch<forward_kernel<S, T>>(
        a.op, detops::cuda::over(out.numel(), detops::cuda::current_stream(out)),
        input.const_data_ptr<S>(), strides_of(input), a.rois.const_data_ptr<S>(),
        static_cast<T>(a.scale), params_of(a), out.mutable_data_ptr<S>());
  }

  template <typename S>
  static void backward(const RotatedArgs& a, const Tensor& grad, Tensor& grad_input) {
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
  using Entry = detops::roi::RoiAlignRotatedEntry<detops::roi::cuda::RoiAlignRotatedBackend>;
  m.impl("roi_align_rotated", TORCH_BOX(&Entry::roi_align_rotated));
  m.impl("_roi_align_rotated_backward", TORCH_BOX(&Entry::roi_align_rotated_backward));
}
