// How a backward kernel adds its contributions into a gradient buffer that many threads write
// (RoI, deformable-convolution and deformable-attention backwards): either with float
// atomics, fast but with bits that depend on the order the threads ran, or, under
// torch.use_deterministic_algorithms, with a fixed-point sum whose bits are the same in every
// order, on every run and for every launch configuration.
//
// A kernel takes the adder as a template parameter and calls `add(pointer, value)` for each
// contribution to the buffer; the backend wraps its launch in scatter_add():
//
//   detops::cuda::scatter_add<T>(op, accumulator, deterministic, [&](auto add) {
//     detops::cuda::launch<backward_kernel<S, T, decltype(add)>>(op, shape, ..., add);
//   });
//
// The deterministic sum runs the kernel twice. Pass 1 records, per buffer element, the
// largest binary exponent E of its contributions (atomicMax) and their number n (atomicAdd
// of integers: order-free). Each element then gets a scale 2^k with k = 61 - E - ceil(log2 n),
// so that sum |v| * 2^k < n * 2^(E+1) * 2^k <= 2^62. Pass 2 adds round(v * 2^k) into a 64-bit
// integer per element: integer addition is associative, so the total is the same in any
// order. The element finally gains total * 2^-k, rounded once to T.
// Error bound per element: n rounding steps of at most 2^-(k+1) each, that is at most
// n * 2^(E + ceil(log2 n) - 62) <= n^2 * max|v| * 2^-61, plus the final rounding to T; far
// below float32's rounding, and for float64 below 2^-40 relative to the largest contribution
// up to a thousand contributions per element.
// Non-finite contributions skip the fixed point and are added into the buffer with float
// atomics: any mix of infinities and NaNs sums to the same infinity or NaN in every order.
// Memory: 16 bytes per buffer element (exponent and count, then the 64-bit sum), freed on
// return. Time: two passes of the kernel plus two elementwise kernels, with 64-bit integer
// atomics instead of float ones.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cmath>
#include <cstdint>
#include <detops/cuda_launch.cuh>

namespace detops::cuda {

// The default adder: the device's float atomics.
struct AtomicAdd {
  template <typename T>
  __device__ __forceinline__ void operator()(T* at, T v) const {
    atomicAdd(at, v);
  }
};

// ilogb of any finite nonzero float64 is at least -1074: this bias keeps recorded exponents
// positive, so 0 (the buffer's initial value) means "no contribution yet".
constexpr int kExponentBias = 2048;

template <typename T>
struct FixedPointSum {
  T* base;                    // the buffer: element i is base[i]
  int32_t* scale;             // pass 1: biased max exponent; after fixed_point_scale_kernel: k
  int32_t* count;             // contributions per element (finite, nonzero ones)
  unsigned long long* total;  // pass 2: sum of round(v * 2^k), two's complement
};

// Pass 1: magnitudes and counts.
template <typename T>
struct RecordMagnitude {
  FixedPointSum<T> s;
  __device__ __forceinline__ void operator()(T* at, T v) const {
    if (v == T(0)) return;
    if (!std::isfinite(v)) {
      atomicAdd(at, v);
      return;
    }
    const int64_t i = at - s.base;
    atomicMax(s.scale + i,
              static_cast<int32_t>(std::ilogb(static_cast<double>(v))) + kExponentBias);
    atomicAdd(s.count + i, 1);
  }
};

// Pass 2: the fixed-point sum.
template <typename T>
struct FixedPointAdd {
  FixedPointSum<T> s;
  __device__ __forceinline__ void operator()(T* at, T v) const {
    if (v == T(0) || !std::isfinite(v)) return;
    const int64_t i = at - s.base;
    const long long q = std::llrint(std::ldexp(static_cast<double>(v), s.scale[i]));
    atomicAdd(s.total + i, static_cast<unsigned long long>(q));
  }
};

template <typename T>
__global__ void fixed_point_scale_kernel(FixedPointSum<T> s, int64_t n) {
  DETOPS_CUDA_LOOP(i, n) {
    const int32_t count = s.count[i];
    if (count == 0) continue;
    int32_t log2_count = 0;
    while ((int64_t(1) << log2_count) < count) ++log2_count;
    s.scale[i] = 61 - (s.scale[i] - kExponentBias) - log2_count;
  }
}

template <typename T>
__global__ void fixed_point_finish_kernel(FixedPointSum<T> s, int64_t n) {
  DETOPS_CUDA_LOOP(i, n) {
    if (s.count[i] == 0) continue;
    const double sum = static_cast<double>(static_cast<long long>(s.total[i]));
    s.base[i] += static_cast<T>(std::ldexp(sum, -s.scale[i]));
  }
}

// Adds what `scatter(add)` contributes into `buffer` (a contiguous T tensor on the device; the
// contributions' pointers lie inside it): one launch with AtomicAdd, or with `deterministic`
// the fixed-point passes above. Below the entry point's guard.
template <typename T, typename Scatter>
void scatter_add(const char* op, torch::stable::Tensor& buffer, bool deterministic,
                 Scatter&& scatter) {
  if (!deterministic) {
    scatter(AtomicAdd{});
    return;
  }
  const int64_t n = buffer.numel();
  if (n == 0) return;
  using torch::headeronly::ScalarType;
  torch::stable::Tensor counts = torch::stable::new_zeros(buffer, {2, n}, ScalarType::Int);
  torch::stable::Tensor totals = torch::stable::new_zeros(buffer, {n}, ScalarType::Long);
  int32_t* scale = counts.mutable_data_ptr<int32_t>();
  const FixedPointSum<T> s{
      buffer.mutable_data_ptr<T>(), scale, scale + n,
      reinterpret_cast<unsigned long long*>(totals.mutable_data_ptr<int64_t>())};
  const cudaStream_t stream = current_stream(buffer);
  scatter(RecordMagnitude<T>{s});
  launch<fixed_point_scale_kernel<T>>(op, over(n, stream), s, n);
  scatter(FixedPointAdd<T>{s});
  launch<fixed_point_finish_kernel<T>>(op, over(n, stream), s, n);
}

}  // namespace detops::cuda
