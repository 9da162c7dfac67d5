// CUDA kernels of detops::ps_roi_pool and detops::_ps_roi_pool_backward: one thread per
// output bin averaging input channel ps_channel(c_out, ph, pw) over the bin (clamped to
// [0, size - 1] like the CPU kernel); the backward spreads grad / area with atomics.
#include <torch/csrc/stable/library.h>

#include "cuda/roi_cuda.cuh"

namespace detops::roi::cuda {
namespace {

struct Params {
  int64_t rois, channels_out, pooled_h, pooled_w, height, width;
};

// The bin's pixel range; false when it is empty.
template <typename S, typename T>
__device__ bool ps_bin(const S* roi, T scale, const Params& p, int64_t ph, int64_t pw, int64_t& h0,
                       int64_t& h1, int64_t& w0, int64_t& w1) {
  const PoolBox<T> box =
      pool_box(static_cast<T>(roi[1]), static_cast<T>(roi[2]), static_cast<T>(roi[3]),
               static_cast<T>(roi[4]), scale, false, p.pooled_h, p.pooled_w);
  h0 = h1 = w0 = w1 = 0;
  if (!box.valid) return false;
  pool_bin(box.start_h, box.bin_h, ph, p.height - 1, h0, h1);
  pool_bin(box.start_w, box.bin_w, pw, p.width - 1, w0, w1);
  return h1 > h0 && w1 > w0;
}

template <typename S, typename T>
__global__ void forward_kernel(const S* __restrict__ input, Strides st, const S* __restrict__ rois,
                               T scale, Params p, S* __restrict__ out) {
  DETOPS_CUDA_LOOP(i, p.rois * p.channels_out * p.pooled_h * p.pooled_w) {
    const BinIndex at = decode_bin(i, p.channels_out, p.pooled_h, p.pooled_w);
    const int64_t r = at.roi, co = at.channel, ph = at.ph, pw = at.pw;
    const S* roi = rois + 5 * r;
    int64_t h0, h1, w0, w1;
    if (!ps_bin(roi, scale, p, ph, pw, h0, h1, w0, w1)) {
      out[i] = static_cast<S>(0);
      continue;
    }
    const S* plane =
        input + batch_of(roi) * st.n + ps_channel(co, ph, pw, p.pooled_h, p.pooled_w) * st.c;
    T sum = T(0);
    for (int64_t y = h0; y < h1; ++y) {
      for (int64_t x = w0; x < w1; ++x) sum += static_cast<T>(plane[y * st.y + x * st.x]);
    }
    out[i] = static_cast<S>(sum / static_cast<T>((h1 - h0) * (w1 - w0)));
  }
}

template <typename S, typename T>
__global__ void backward_kernel(const S* __restrict__ grad, Strides gs, const S* __restrict__ rois,
                                T scale, Params p, int64_t channels, T* __restrict__ grad_input) {
  DETOPS_CUDA_LOOP(i, p.rois * p.channels_out * p.pooled_h * p.pooled_w) {
    const BinIndex at = decode_bin(i, p.channels_out, p.pooled_h, p.pooled_w);
    const int64_t r = at.roi, co = at.channel, ph = at.ph, pw = at.pw;
    const S* roi = rois + 5 * r;
    int64_t h0, h1, w0, w1;
    if (!ps_bin(roi, scale, p, ph, pw, h0, h1, w0, w1)) continue;
    const T g = static_cast<T>(grad[r * gs.n + co * gs.c + ph * gs.y + pw * gs.x]) /
                static_cast<T>((h1 - h0) * (w1 - w0));
    T* plane =
        grad_input + (batch_of(roi) * channels + ps_channel(co, ph, pw, p.pooled_h, p.pooled_w)) *
                         p.height * p.width;
    for (int64_t y = h0; y < h1; ++y) {
      for (int64_t x = w0; x < w1; ++x) atomicAdd(plane + y * p.width + x, g);
    }
  }
}

Tensor ps_roi_pool_cuda(Tensor input, Tensor rois_in, double spatial_scale, int64_t pooled_h,
                        int64_t pooled_w) {
  const char* op = "detops.ps_roi_pool";
  check_forward(op, input, rois_in, pooled_h, pooled_w, 0, true);
  const Params p{rois_in.size(0), input.size(1) / (pooled_h * pooled_w),
                 pooled_h,        pooled_w,
                 input.size(2),   input.size(3)};
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

Tensor ps_roi_pool_backward_cuda(Tensor grad, Tensor rois_in, double spatial_scale,
                                 int64_t pooled_h, int64_t pooled_w, int64_t batch_size,
                                 int64_t channels, int64_t height, int64_t width) {
  const char* op = "detops._ps_roi_pool_backward";
  check_backward(op, grad, rois_in, pooled_h, pooled_w, 0, batch_size, channels, height, width,
                 true);
  const Params p{
      rois_in.size(0), channels / (pooled_h * pooled_w), pooled_h, pooled_w, height, width};
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
  m.impl("ps_roi_pool", TORCH_BOX(&detops::roi::cuda::ps_roi_pool_cuda));
  m.impl("_ps_roi_pool_backward", TORCH_BOX(&detops::roi::cuda::ps_roi_pool_backward_cuda));
}
