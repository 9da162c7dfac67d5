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
    const int64_t pw = i % pooled_w;
    const int64_t ph = (i / pooled_w) % pooled_h;
    const int64_t ch = (i / (pooled_w * pooled_h)) % channels;
    const S* roi = rois + 5 * (i / (pooled_w * pooled_h * channels));
    const PoolBox<T> box = pool_box(static_cast<T>(roi[1]), static_cast<T>(roi[2]),
                                    static_cast<T>(roi[3]), static_cast<T>(roi[4]), scale, true,
                                    pooled_h, pooled_w);
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
    const int64_t pw = i % pooled_w;
    const int64_t ph = (i / pooled_w) % pooled_h;
    const int64_t ch = (i / (pooled_w * pooled_h)) % channels;
    const int64_t r = i / (pooled_w * pooled_h * channels);
    const T g = static_cast<T>(grad[r * gs.n + ch * gs.c + ph * gs.y + pw * gs.x]);
    atomicAdd(grad_input + (batch_of(rois + 5 * r) * channels + ch) * area + where, g);
  }
}

std::tuple<Tensor, Tensor> roi_pool_cuda(Tensor input, Tensor rois_in, double spatial_scale,
                                         int64_t pooled_h, int64_t pooled_w) {
  const char* op = "detops.roi_pool";
  check_input(op, input);
  check_rois(op, input, rois_in);
  check_output_size(op, pooled_h, pooled_w);
  check(input.size(2) * input.size(3) < (int64_t(1) << 31), op,
        "input planes must have fewer than 2^31 elements (argmax is int32), got ",
        shape_str(input));
  return dispatch_floating(input.scalar_type(), op, "input", [&](auto tag) {
    using S = typename decltype(tag)::type;
    using T = acc_t<S>;
    check_batch_on_host<S>(op, rois_in, input.size(0));
    const int64_t k = rois_in.size(0), c = input.size(1);
    Tensor out = torch::stable::new_empty(input, {k, c, pooled_h, pooled_w});
    Tensor argmax = torch::stable::new_empty(input, {k, c, pooled_h, pooled_w}, ScalarType::Int);
    const int64_t total = out.numel();
    if (total > 0) {
      torch::stable::accelerator::DeviceGuard guard(input.get_device_index());
      const Tensor rois = torch::stable::contiguous(rois_in);
      forward_kernel<S, T><<<detops::cuda::grid_for(total, kThreads), kThreads, 0,
                             detops::cuda::current_stream(input)>>>(
          input.const_data_ptr<S>(), strides_of(input), input.size(2), input.size(3),
          rois.const_data_ptr<S>(), k, c, pooled_h, pooled_w, static_cast<T>(spatial_scale),
          out.mutable_data_ptr<S>(), argmax.mutable_data_ptr<int32_t>());
      detops::cuda::check_launch(op);
    }
    return std::make_tuple(out, argmax);
  });
}

Tensor roi_pool_backward_cuda(Tensor grad, Tensor rois_in, Tensor argmax_in, double,
                              int64_t pooled_h, int64_t pooled_w, int64_t batch_size,
                              int64_t channels, int64_t height, int64_t width) {
  const char* op = "detops._roi_pool_backward";
  check_output_size(op, pooled_h, pooled_w);
  check_input_shape(op, batch_size, channels, height, width);
  check_rois(op, grad, rois_in);
  check_grad(op, grad, rois_in, channels, pooled_h, pooled_w);
  check(argmax_in.scalar_type() == ScalarType::Int && argmax_in.dim() == 4 &&
            argmax_in.size(0) == grad.size(0) && argmax_in.size(1) == channels &&
            argmax_in.size(2) == pooled_h && argmax_in.size(3) == pooled_w,
        op, "argmax must be an int32 tensor shaped like grad ", shape_str(grad));
  check_same_device(op, "grad", grad, "argmax", argmax_in);
  return dispatch_floating(grad.scalar_type(), op, "grad", [&](auto tag) {
    using S = typename decltype(tag)::type;
    using T = acc_t<S>;
    check_batch_on_host<S>(op, rois_in, batch_size);
    Tensor buffer = grad_buffer<S>(grad, batch_size, channels, height, width);
    const int64_t total = grad.numel();
    if (total > 0) {
      torch::stable::accelerator::DeviceGuard guard(grad.get_device_index());
      const Tensor rois = torch::stable::contiguous(rois_in);
      const Tensor argmax = torch::stable::contiguous(argmax_in);
      backward_kernel<S, T><<<detops::cuda::grid_for(total, kThreads), kThreads, 0,
                              detops::cuda::current_stream(grad)>>>(
          grad.const_data_ptr<S>(), strides_of(grad), argmax.const_data_ptr<int32_t>(),
          rois.const_data_ptr<S>(), rois.size(0), channels, pooled_h, pooled_w, height * width,
          buffer.mutable_data_ptr<T>());
      detops::cuda::check_launch(op);
    }
    return finish_grad<S>(buffer, grad.scalar_type());
  });
}

}  // namespace
}  // namespace detops::roi::cuda

STABLE_TORCH_LIBRARY_IMPL(detops, CUDA, m) {
  m.impl("roi_pool", TORCH_BOX(&detops::roi::cuda::roi_pool_cuda));
  m.impl("_roi_pool_backward", TORCH_BOX(&detops::roi::cuda::roi_pool_backward_cuda));
}
