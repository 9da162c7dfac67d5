// CUDA kernels of detops::sigmoid_focal_loss and its backward. The per-element math is
// focal_loss_math.h (shared with the CPU kernels), the entry points, checks and allocation
// focal_loss_entry.h. Here: thread mapping and launches only.
//
// Reduction "none" and the backward: one thread per element (grid-stride), the same
// expression as the CPU loop, so the results are bitwise equal to the CPU's.
// Reductions "mean" and "sum", without atomics, in double: a first kernel in which block b
// sums the chunks b, b + gridDim.x, ... of kReduceChunk elements (threads stride through a
// chunk, then a shared-memory tree) into partials[chunk]; a second, one-block kernel sums
// the partials (threads stride, then a tree) and divides. Every sum has a fixed order that
// depends only on n: bitwise repeatable. (The CPU sums a chunk in another order, so the two
// devices agree to rounding, not bit for bit.)
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <detops/cuda_launch.cuh>

#include "focal_loss_entry.h"
#include "focal_loss_math.h"

namespace detops::focal_loss::cuda {
namespace {

inline constexpr int kReduceThreads = 128;

template <int kGamma, typename S, typename T>
__global__ void loss_kernel(FocalParams<T> p, int64_t n, const S* __restrict__ inputs,
                            const S* __restrict__ targets, S* __restrict__ out) {
  DETOPS_CUDA_LOOP(i, n) {
    out[i] = static_cast<S>(
        focal_loss<kGamma>(static_cast<T>(inputs[i]), static_cast<T>(targets[i]), p));
  }
}

// Tree sum of the block's `shared` values (kReduceThreads of them) into shared[0].
template <typename A>
__device__ void block_sum(A* shared) {
  for (int width = kReduceThreads / 2; width > 0; width /= 2) {
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < width) shared[threadIdx.x] += shared[threadIdx.x + width];
  }
  __syncthreads();
}

template <int kGamma, typename S, typename T>
__global__ void partial_sums_kernel(FocalParams<T> p, int64_t n, int64_t count,
                                    const S* __restrict__ inputs, const S* __restrict__ targets,
                                    double* __restrict__ partials) {
  __shared__ double shared[kReduceThreads];
  for (int64_t c = blockIdx.x; c < count; c += gridDim.x) {
    const int64_t first = c * kReduceChunk;
    const int64_t end = first + kReduceChunk < n ? first + kReduceChunk : n;
    double acc = 0.0;
    for (int64_t i = first + threadIdx.x; i < end; i += kReduceThreads) {
      acc += static_cast<double>(
          focal_loss<kGamma>(static_cast<T>(inputs[i]), static_cast<T>(targets[i]), p));
    }
    shared[threadIdx.x] = acc;
    block_sum(shared);
    if (threadIdx.x == 0) partials[c] = shared[0];
    __syncthreads();  // shared is rewritten for the next chunk
  }
}

template <typename S, typename T>
__global__ void finish_sum_kernel(int64_t count, const double* __restrict__ partials, T divisor,
                                  S* __restrict__ out) {
  __shared__ double shared[kReduceThreads];
  double acc = 0.0;
  for (int64_t c = threadIdx.x; c < count; c += kReduceThreads) {
    acc += partials[c];
  }
  shared[threadIdx.x] = acc;
  block_sum(shared);
  if (threadIdx.x == 0)
    out[0] = static_cast<S>(static_cast<T>(shared[0] / static_cast<double>(divisor)));
}

template <int kGamma, bool kPerElement, bool kTargets, typename S, typename T>
__global__ void backward_kernel(FocalParams<T> p, int64_t n, const S* __restrict__ inputs,
                                const S* __restrict__ targets, const S* __restrict__ grad,
                                T divisor, S* __restrict__ grad_inputs,
                                S* __restrict__ grad_targets) {
  const T shared_grad = kPerElement ? T(0) : static_cast<T>(grad[0]) / divisor;
  DETOPS_CUDA_LOOP(i, n) {
    const T g = kPerElement ? static_cast<T>(grad[i]) : shared_grad;
    const FocalGrad<T> d = focal_loss_grad<kGamma, kTargets>(static_cast<T>(inputs[i]),
                                                             static_cast<T>(targets[i]), g, p);
    grad_inputs[i] = static_cast<S>(d.inputs);
    if constexpr (kTargets) grad_targets[i] = static_cast<S>(d.targets);
  }
}

struct FocalLossBackend : detops::CudaBackend {
  // Below the entry point's guard: the current stream is inputs'.
  template <int kGamma, typename S, typename T>
  static void loss(const FocalParams<T>& p, int64_t n, const S* inputs, const S* targets, S* out) {
    detops::cuda::launch<loss_kernel<kGamma, S, T>>(
        "detops.sigmoid_focal_loss loss_kernel",
        detops::cuda::over(n, detops::cuda::current_stream()), p, n, inputs, targets, out);
  }

  template <int kGamma, typename S, typename T>
  static void reduce(const FocalParams<T>& p, int64_t n, const S* inputs, const S* targets,
                     double* partials, T divisor, S* out) {
    const int64_t count = chunks(n);
    const cudaStream_t stream = detops::cuda::current_stream();
    if (count > 0) {
      const detops::cuda::Shape shape(dim3(detops::cuda::grid_for(count, 1)), dim3(kReduceThreads),
                                      stream);
      detops::cuda::launch<partial_sums_kernel<kGamma, S, T>>(
          "detops.sigmoid_focal_loss partial_sums_kernel", shape, p, n, count, inputs, targets,
          partials);
    }
    detops::cuda::launch<finish_sum_kernel<S, T>>(
        "detops.sigmoid_focal_loss finish_sum_kernel",
        detops::cuda::Shape(dim3(1), dim3(kReduceThreads), stream), count, partials, divisor, out);
  }

  template <int kGamma, typename S, typename T>
  static void backward(const FocalParams<T>& p, int64_t n, const S* inputs, const S* targets,
                       const S* grad, bool per_element, T divisor, S* grad_inputs,
                       S* grad_targets) {
    if (per_element) {
      if (grad_targets != nullptr) {
        run<backward_kernel<kGamma, true, true, S, T>>(p, n, inputs, targets, grad, divisor,
                                                       grad_inputs, grad_targets);
      } else {
        run<backward_kernel<kGamma, true, false, S, T>>(p, n, inputs, targets, grad, divisor,
                                                        grad_inputs, grad_targets);
      }
    } else if (grad_targets != nullptr) {
      run<backward_kernel<kGamma, false, true, S, T>>(p, n, inputs, targets, grad, divisor,
                                                      grad_inputs, grad_targets);
    } else {
      run<backward_kernel<kGamma, false, false, S, T>>(p, n, inputs, targets, grad, divisor,
                                                       grad_inputs, grad_targets);
    }
  }

 private:
  template <auto Kernel, typename T, typename S>
  static void run(const FocalParams<T>& p, int64_t n, const S* inputs, const S* targets,
                  const S* grad, T divisor, S* grad_inputs, S* grad_targets) {
    detops::cuda::launch<Kernel>("detops._sigmoid_focal_loss_backward backward_kernel",
                                 detops::cuda::over(n, detops::cuda::current_stream()), p, n,
                                 inputs, targets, grad, divisor, grad_inputs, grad_targets);
  }
};

}  // namespace
}  // namespace detops::focal_loss::cuda

DETOPS_CUDA_LIBRARY_IMPL(m) {
  using Entry = detops::focal_loss::FocalLossEntry<detops::focal_loss::cuda::FocalLossBackend>;
  m.impl("sigmoid_focal_loss", TORCH_BOX(&Entry::sigmoid_focal_loss));
  m.impl("_sigmoid_focal_loss_backward", TORCH_BOX(&Entry::sigmoid_focal_loss_backward));
}
