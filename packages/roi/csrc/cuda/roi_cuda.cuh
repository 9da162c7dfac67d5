// CUDA plumbing shared by the RoI kernels: the backend traits, the float32 (float64)
// gradient accumulators the backward kernels add into (with float atomics, or order-free
// under torch.use_deterministic_algorithms: detops/scatter_add.cuh), and the output-bin
// thread mapping. Checks and allocation live in roi_entry.h, the math in roi_math.h.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <detops/cuda_launch.cuh>
#include <detops/scatter_add.cuh>
#include <type_traits>

#include "roi_entry.h"
#include "roi_math.h"

namespace detops::roi::cuda {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

// What every CUDA backend of roi_entry.h shares: detops/backend.h's concept (rois and
// levels stay on the device: the kernels give invalid ones a zero row and no gradient
// instead of a host round-trip), and a multi_level call passes its maps by value, at most
// kMaxLevels of them.
struct RoiCudaBackend : detops::CudaBackend {
  static constexpr size_t kMaxLevels = 8;
};

// The zeroed buffer a backward kernel accumulates grad_input into: grad_input itself for
// float32 / float64, a float32 scratch for float16 / bfloat16 (atomics on the narrow type
// would round every addition). finish_grad stores it into grad_input.
template <typename S>
Tensor grad_accumulator(Tensor& grad_input) {
  if constexpr (std::is_same_v<S, acc_t<S>>) {
    return torch::stable::zero_(grad_input);
  } else {
    return torch::stable::new_zeros(
        grad_input,
        {grad_input.size(0), grad_input.size(1), grad_input.size(2), grad_input.size(3)},
        acc_scalar_type<S>());
  }
}

template <typename S>
void finish_grad(const Tensor& accumulator, Tensor& grad_input) {
  if constexpr (!std::is_same_v<S, acc_t<S>>) torch::stable::copy_(grad_input, accumulator);
}

// grad_input from a backward kernel that adds into a zeroed accumulator:
// `launch(add, accumulator)` launches it with the adder scatter_add passes (once with
// atomics, twice when a.deterministic) and the accumulator's data.
template <typename S, typename Args, typename Launch>
void accumulate_grad(const Args& a, Tensor& grad_input, Launch&& launch) {
  using T = acc_t<S>;
  Tensor accumulator = grad_accumulator<S>(grad_input);
  T* data = accumulator.mutable_data_ptr<T>();
  detops::cuda::scatter_add<T>(a.op, accumulator, a.deterministic,
                               [&](auto add) { launch(add, data); });
  finish_grad<S>(accumulator, grad_input);
}

// Adds g * (bilinear weights at (ty, tx)) into a contiguous plane of width w.
template <typename T, typename Add>
__device__ __forceinline__ void scatter(T* plane, int64_t w, const Tap<T>& ty, const Tap<T>& tx,
                                        T g, const Add& add) {
  add(plane + ty.lo * w + tx.lo, g * ty.w_lo * tx.w_lo);
  add(plane + ty.lo * w + tx.hi, g * ty.w_lo * tx.w_hi);
  add(plane + ty.hi * w + tx.lo, g * ty.w_hi * tx.w_lo);
  add(plane + ty.hi * w + tx.hi, g * ty.w_hi * tx.w_hi);
}

// Calls f(ty, tx) for every sample of bin (ph, pw) that lies on an h x w map.
template <typename T, typename F>
__device__ __forceinline__ void for_each_sample(const AlignBox<T>& b, int64_t ph, int64_t pw,
                                                int64_t h, int64_t w, F&& f) {
  for_each_tap(b.start_h, b.bin_h, ph, b.grid_h, h, [&](const Tap<T>& ty) {
    for_each_tap(b.start_w, b.bin_w, pw, b.grid_w, w, [&](const Tap<T>& tx) { f(ty, tx); });
  });
}

// Output bin i of a [rois, channels, pooled_h, pooled_w] tensor: one thread per bin, the
// width fastest, so neighbouring threads write neighbouring elements.
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

}  // namespace detops::roi::cuda
