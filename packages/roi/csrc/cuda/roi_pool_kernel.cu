// CUDA kernels of detops::roi_pool and detops::_roi_pool_backward: one thread per output
// bin (maximum and its position, scanned row-major with `>` as on CPU); the backward adds
// each bin's gradient at its argmax with an atomic, in float32 (float64).
#include <torch/csrc/stable/library.h>

#include <cfloat>

#include "cuda/roi_cuda.cuh"

namespace detops::roi::cuda {
namespace {

template <typename S, typename T>
__global__ void forward_kernel(const S* __restrict__ input, Strides st, int64_t height,
                               int64_t width, const S* __restrict__ rois, int64_t k,
                               int64_t channels, int64_t pooled_h, int64_t pooled_w, T scale,
                               S* __restrict__ out, int32_t* __restrict__ argmax) {
  DETOPS_CUDA_LOOP(i, k * channels * pooled_h * pooled_w) {
    const BinIndex at = decode_bin(i, channels, pooled_h, pooled_w);
    const int64_t r = at.roi, ch = at.channel, ph = at.ph, pw = at.pw;
    const S* roi = rois + 5 * r;
    const PoolBox<T> box =
        pool_box(static_cast<T>(roi[1]), static_cast<T>(roi[2]), static_cast<T>(roi[3]),
                 static_cast<T>(roi[4]), scale, true, pooled_h, pooled_w);
    int64_t h0 = 0, h1 = 0, w0 = 0, w1 = 0;
    if (box.valid) {
      pool_bin(box.start_h, box.bin_h, ph, height, h0, h1);
      pool_bin(box.start_w, box.bin_w, pw, width, w0, w1);
    }
    const bool empty = h1 <= h0 || w1 <= w0;
    T best = empty ? T(0) : static_cast<T>(-FLT_MAX);
    int64_t where = -1;
    const S* plane = input + batch_of(roi) * st.n + ch * st.c;
    for (int64_t y = h0; y < h1; ++y) {
      for (int64_t x = w0; x < w1; ++x) {
        const T v = static_cast<T>(plane[y * st.y + x * st.x]);
        if (v > best) {
          best = v;
          where = y * width + x;
        }
      }
    }
    out[i] = static_cast<S>(best);
    argmax[i] = static_cast<int32_t>(where);
  }
}

template <typename S, typename T>
__global__ void backward_kernel(const S* __restrict__ grad, Strides gs,
                                const int32_t* __restrict__ argmax, const S* __restrict__ rois,
                                int64_t k, int64_t channels, int64_t pooled_h, int64_t pooled_w,
                                int64_t area, T* __restrict__ grad_input) {
  DETOPS_CUDA_LOOP(i, k * channels * pooled_h * pooled_w) {
    const int64_t where = argmax[i];
    if (where < 0 || where >= area) continue;
    const BinIndex at = decode_bin(i, channels, pooled_h, pooled_w);
    const int64_t r = at.roi, ch = at.channel, ph = at.ph, pw = at.pw;
    const T g = static_cast<T>(grad[r * gs.n + ch * gs.c + ph * gs.y + pw * gs.x]);
    atomicAdd(grad_input + (batch_of(rois + 5 * r) * channels + ch) * area + where, g);
  }
}

std::tuple<Tensor, Tensor> roi_pool_cuda(Tensor input, Tensor rois_in, double spatial_scale,
                                         int64_t pooled_h, int64_t pooled_w) {
  const char* op = "detops.roi_pool";
  check_forward(op, input, rois_in, pooled_h, pooled_w, 0, false);
  check_plane_fits_int32(op, input);
  return dispatch_floating(input.scalar_type(), op, "input", [&](auto tag) {
    using S = typename decltype(tag)::type;
    using T = acc_t<S>;
    const int64_t k = rois_in.size(0), c = input.size(1);
    Tensor out = torch::stable::new_empty(input, {k, c, pooled_h, pooled_w});
    Tensor argmax = torch::stable::new_empty(input, {k, c, pooled_h, pooled_w}, ScalarType::Int);
    run_forward<S>(
        op, input, rois_in, out, [&](const Tensor& rois, unsigned blocks, cudaStream_t stream) {
          forward_kernel<S, T><<<blocks, kThreads, 0, stream>>>(
              input.const_data_ptr<S>(), strides_of(input), input.size(2), input.size(3),
              rois.const_data_ptr<S>(), k, c, pooled_h, pooled_w, static_cast<T>(spatial_scale),
              out.mutable_data_ptr<S>(), argmax.mutable_data_ptr<int32_t>());
        });
    return std::make_tuple(out, argmax);
  });
}

Tensor roi_pool_backward_cuda(Tensor grad, Tensor rois_in, Tensor argmax_in, double,
                              int64_t pooled_h, int64_t pooled_w, int64_t batch_size,
                              int64_t channels, int64_t height, int64_t width) {
  const char* op = "detops._roi_pool_backward";
  check_backward(op, grad, rois_in, pooled_h, pooled_w, 0, batch_size, channels, height, width,
                 false);
  check_argmax(op, argmax_in, grad);
  return dispatch_floating(grad.scalar_type(), op, "grad", [&](auto tag) {
    using S = typename decltype(tag)::type;
    using T = acc_t<S>;
    return run_backward<S>(
        op, grad, rois_in, batch_size, channels, height, width,
        [&](const Tensor& rois, T* buffer, unsigned blocks, cudaStream_t stream) {
          const Tensor argmax = torch::stable::contiguous(argmax_in);
          backward_kernel<S, T><<<blocks, kThreads, 0, stream>>>(
              grad.const_data_ptr<S>(), strides_of(grad), argmax.const_data_ptr<int32_t>(),
              rois.const_data_ptr<S>(), rois.size(0), channels, pooled_h, pooled_w, height * width,
              buffer);
        });
  });
}

}  // namespace
}  // namespace detops::roi::cuda

STABLE_TORCH_LIBRARY_IMPL(detops, CUDA, m) {
  m.impl("roi_pool", TORCH_BOX(&detops::roi::cuda::roi_pool_cuda));
  m.impl("_roi_pool_backward", TORCH_BOX(&detops::roi::cuda::roi_pool_backward_cuda));
}
