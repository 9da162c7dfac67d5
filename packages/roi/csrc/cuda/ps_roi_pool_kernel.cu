// CUDA kernels of detops::ps_roi_pool and detops::_ps_roi_pool_backward: one thread per
// output bin averaging input channel ps_channel(c_out, ph, pw) over the bin (bin_mean,
// clamped to [0, size - 1] as on CPU); the backward spreads grad / area (roi_cuda.cuh's
// accumulate_grad). A RoI with an invalid batch index gets a zero row and no gradient.
#include <torch/csrc/stable/library.h>

#include "cuda/roi_cuda.cuh"
#include "roi_entry.h"

namespace detops::roi::cuda {
namespace {

struct Params {
  int64_t rois, batch, channels_out, pooled_h, pooled_w, height, width;
};

// Rows [h0, h1) and columns [w0, w1) of bin (ph, pw); all empty for a non-finite box.
template <typename S, typename T>
__device__ __forceinline__ void ps_bin(const S* roi, T scale, const Params& p, int64_t ph,
                                       int64_t pw, int64_t& h0, int64_t& h1, int64_t& w0,
                                       int64_t& w1) {
  const PoolBox<T> box =
      pool_box(static_cast<T>(roi[1]), static_cast<T>(roi[2]), static_cast<T>(roi[3]),
               static_cast<T>(roi[4]), scale, PoolOp::kPsRoiPool, p.pooled_h, p.pooled_w);
  h0 = h1 = w0 = w1 = 0;
  if (!box.valid) return;
  pool_bin(box.start_h, box.bin_h, ph, pool_limit(p.height, PoolOp::kPsRoiPool), h0, h1);
  pool_bin(box.start_w, box.bin_w, pw, pool_limit(p.width, PoolOp::kPsRoiPool), w0, w1);
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
    int64_t h0, h1, w0, w1;
    ps_bin(roi, scale, p, at.ph, at.pw, h0, h1, w0, w1);
    const S* plane =
        input + st.plane(b, ps_channel(at.channel, at.ph, at.pw, p.pooled_h, p.pooled_w));
    out[i] = static_cast<S>(bin_mean<S, T>(plane, st.y, st.x, h0, h1, w0, w1));
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
    int64_t h0, h1, w0, w1;
    ps_bin(roi, scale, p, at.ph, at.pw, h0, h1, w0, w1);
    if (h1 <= h0 || w1 <= w0) continue;
    const T g =
        static_cast<T>(grad[at.roi * gs.n + at.channel * gs.c + at.ph * gs.y + at.pw * gs.x]) /
        static_cast<T>((h1 - h0) * (w1 - w0));
    const int64_t channels = p.channels_out * p.pooled_h * p.pooled_w;
    const int64_t c_in = ps_channel(at.channel, at.ph, at.pw, p.pooled_h, p.pooled_w);
    T* plane = grad_input + (b * channels + c_in) * p.height * p.width;
    for (int64_t y = h0; y < h1; ++y) {
      for (int64_t x = w0; x < w1; ++x) add(plane + y * p.width + x, g);
    }
  }
}

Params params_of(const RoiArgs& a) {
  return {a.num_rois(), a.batch, a.channels_out(), a.pooled_h, a.pooled_w, a.height, a.width};
}

struct PsRoiPoolBackend : RoiCudaBackend {
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
  using Entry = detops::roi::PsRoiPoolEntry<detops::roi::cuda::PsRoiPoolBackend>;
  m.impl("ps_roi_pool", TORCH_BOX(&Entry::ps_roi_pool));
  m.impl("_ps_roi_pool_backward", TORCH_BOX(&Entry::ps_roi_pool_backward));
}
