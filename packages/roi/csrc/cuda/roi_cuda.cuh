// CUDA plumbing shared by the RoI kernels: launch shape, host-side checks of RoI batch
// indices (one small device-to-host copy), strides passed by value, and float32 (float64
// for double) gradient buffers that the backward kernels accumulate into with atomics.
#pragma once

#include <detops/dispatch.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/device.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <detops/cuda_launch.cuh>

#include "roi_checks.h"
#include "roi_geometry.h"

namespace detops::roi::cuda {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

constexpr int kThreads = 256;

inline Tensor to_host(const Tensor& t) {
  return torch::stable::contiguous(
      torch::stable::to(t, torch::stable::Device(torch::headeronly::DeviceType::CPU)));
}

template <typename S>
void check_batch_on_host(const char* op, const Tensor& rois, int64_t batch_size) {
  const Tensor host = to_host(rois);
  check_batch_indices(op, host.const_data_ptr<S>(), host.size(0), batch_size);
}

struct Strides {
  int64_t n, c, y, x;
};

inline Strides strides_of(const Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// Batch index of a validated RoI row.
template <typename S>
DETOPS_INLINE int64_t batch_of(const S* roi) {
  return static_cast<int64_t>(static_cast<double>(roi[0]));
}

template <typename S>
ScalarType acc_scalar_type() {
  return sizeof(S) == 8 ? ScalarType::Double : ScalarType::Float;
}

// Zeroed [n, c, h, w] gradient accumulator in acc_t<S>.
template <typename S>
Tensor grad_buffer(const Tensor& like, int64_t n, int64_t c, int64_t h, int64_t w) {
  return torch::stable::new_zeros(like, {n, c, h, w}, acc_scalar_type<S>());
}

// The accumulator in the gradient's dtype (a no-op for float32 / float64).
template <typename S>
Tensor finish_grad(const Tensor& buffer, ScalarType dtype) {
  return buffer.scalar_type() == dtype ? buffer : torch::stable::to(buffer, dtype);
}

// Bilinear value of a plane at taps (ty, tx).
template <typename S, typename T>
__device__ __forceinline__ T interpolate(const S* plane, const Strides& st, const Tap<T>& ty,
                                         const Tap<T>& tx) {
  const S* lo = plane + ty.lo * st.y;
  const S* hi = plane + ty.hi * st.y;
  return ty.w_lo * (tx.w_lo * static_cast<T>(lo[tx.lo * st.x]) +
                    tx.w_hi * static_cast<T>(lo[tx.hi * st.x])) +
         ty.w_hi * (tx.w_lo * static_cast<T>(hi[tx.lo * st.x]) +
                    tx.w_hi * static_cast<T>(hi[tx.hi * st.x]));
}

// Adds g * (bilinear weights at (ty, tx)) into a contiguous plane of width w.
template <typename T>
__device__ __forceinline__ void scatter(T* plane, int64_t w, const Tap<T>& ty, const Tap<T>& tx,
                                        T g) {
  atomicAdd(plane + ty.lo * w + tx.lo, g * ty.w_lo * tx.w_lo);
  atomicAdd(plane + ty.lo * w + tx.hi, g * ty.w_lo * tx.w_hi);
  atomicAdd(plane + ty.hi * w + tx.lo, g * ty.w_hi * tx.w_lo);
  atomicAdd(plane + ty.hi * w + tx.hi, g * ty.w_hi * tx.w_hi);
}

// Output bin i of a [rois, channels, pooled_h, pooled_w] tensor.
struct BinIndex {
  int64_t roi, channel, ph, pw;
};

DETOPS_INLINE BinIndex decode_bin(int64_t i, int64_t channels, int64_t pooled_h, int64_t pooled_w) {
  BinIndex b;
  b.pw = i % pooled_w;
  b.ph = (i / pooled_w) % pooled_h;
  b.channel = (i / (pooled_w * pooled_h)) % channels;
  b.roi = i / (pooled_w * pooled_h * channels);
  return b;
}

// Forward entry: checks batch indices, then launch(rois, blocks, stream) writes `out`.
template <typename S, typename Launch>
Tensor run_forward(const char* op, const Tensor& input, const Tensor& rois_in, Tensor out,
                   const Launch& launch) {
  check_batch_on_host<S>(op, rois_in, input.size(0));
  const int64_t total = out.numel();
  if (total > 0) {
    torch::stable::accelerator::DeviceGuard guard(input.get_device_index());
    const Tensor rois = torch::stable::contiguous(rois_in);
    launch(rois, detops::cuda::grid_for(total, kThreads), detops::cuda::current_stream(input));
    detops::cuda::check_launch(op);
  }
  return out;
}

// Backward entry: launch(rois, buffer, blocks, stream) accumulates into a zeroed
// [n, c, h, w] buffer in acc_t<S>, returned in grad's dtype.
template <typename S, typename Launch>
Tensor run_backward(const char* op, const Tensor& grad, const Tensor& rois_in, int64_t n, int64_t c,
                    int64_t h, int64_t w, const Launch& launch) {
  check_batch_on_host<S>(op, rois_in, n);
  Tensor buffer = grad_buffer<S>(grad, n, c, h, w);
  const int64_t total = grad.numel();
  if (total > 0) {
    torch::stable::accelerator::DeviceGuard guard(grad.get_device_index());
    const Tensor rois = torch::stable::contiguous(rois_in);
    launch(rois, buffer.mutable_data_ptr<acc_t<S>>(), detops::cuda::grid_for(total, kThreads),
           detops::cuda::current_stream(grad));
    detops::cuda::check_launch(op);
  }
  return finish_grad<S>(buffer, grad.scalar_type());
}

// Calls f(ty, tx) for every sample of bin (ph, pw) that lies on the map.
template <typename T, typename F>
__device__ __forceinline__ void for_each_sample(const AlignBox<T>& b, int64_t ph, int64_t pw,
                                                int64_t h, int64_t w, F&& f) {
  int64_t y0 = 0, y1 = 0, x0 = 0, x1 = 0;
  if (b.grid_h > 0) sample_range(b.start_h, b.bin_h, ph, b.grid_h, h, y0, y1);
  if (b.grid_w > 0) sample_range(b.start_w, b.bin_w, pw, b.grid_w, w, x0, x1);
  for (int64_t iy = y0; iy < y1; ++iy) {
    Tap<T> ty;
    if (!axis_tap(sample_pos(b.start_h, b.bin_h, ph, iy, b.grid_h), h, ty)) continue;
    for (int64_t ix = x0; ix < x1; ++ix) {
      Tap<T> tx;
      if (!axis_tap(sample_pos(b.start_w, b.bin_w, pw, ix, b.grid_w), w, tx)) continue;
      f(ty, tx);
    }
  }
}

}  // namespace detops::roi::cuda
