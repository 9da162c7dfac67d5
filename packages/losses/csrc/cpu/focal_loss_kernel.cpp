// CPU kernels of detops::sigmoid_focal_loss and its backward.
//
// Every loop is one pass over inputs and targets (and grad_output), writing only its result:
// no N-element temporaries. Elements are independent, so the work is split with
// parallel_for; the inner loops call only the branch-free float math of focal_loss_math.h,
// so the compiler vectorises them for float32.
//
// The reductions sum each chunk of kReduceChunk elements in kLanes interleaved double
// accumulators (as accurate as torch's cascade sum of float32, and still vectorised), then
// the lanes in order, then the chunks' partials in chunk order: the split does not depend on
// the number of threads, so the sum is bitwise repeatable.
#include <detops/vector_clones.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>

#include "focal_loss_entry.h"
#include "focal_loss_math.h"

namespace detops::focal_loss::cpu {
namespace {

// Elements per parallel_for piece. An element costs about 1 ns here (several times one of
// torch's elementwise ops, whose grain is 32768), so half of torch's grain still gives each
// thread over 15 us of work: measured on 2 cores at 300 x 91 (27,300 elements), splitting
// takes each pass from about 31-37 us to 18-22 us, also with other work between the calls.
// Smaller problems stay on one thread, where waking the pool would cost more than the work.
inline constexpr int64_t kGrain = int64_t(1) << 14;
inline constexpr int kLanes = 8;

// The loops below carry DETOPS_VECTOR_CLONES (detops/vector_clones.h): measured at 300 x 91,
// AVX-512 makes the forward and backward loops 17% and 27% faster than AVX2; all versions
// round identically (checked bitwise, special values included, for the float loss and
// gradients).

template <int kGamma, typename S, typename T>
DETOPS_VECTOR_CLONES void loss_span(FocalParams<T> p, int64_t begin, int64_t end,
                                    const S* __restrict__ inputs, const S* __restrict__ targets,
                                    S* __restrict__ out) {
  for (int64_t i = begin; i < end; ++i) {
    out[i] = static_cast<S>(
        focal_loss<kGamma>(static_cast<T>(inputs[i]), static_cast<T>(targets[i]), p));
  }
}

// The losses of x[0, size) summed in double: kLanes interleaved accumulators, then in order.
// The losses of a block are computed into a buffer first, so that loop vectorises like
// loss_span's (computing and accumulating each one in a single loop did not: 1.4 times
// slower at 300 x 91); the sums are the same, term for term and in the same order.
template <int kGamma, typename S, typename T>
DETOPS_VECTOR_CLONES double chunk_sum(FocalParams<T> p, int64_t size, const S* __restrict__ x,
                                      const S* __restrict__ t) {
  constexpr int64_t kBlock = 16 * kLanes;
  T block[kBlock];
  double lanes[kLanes] = {};
  for (int64_t first = 0; first < size; first += kBlock) {
    const int64_t count = std::min(kBlock, size - first);
    for (int64_t i = 0; i < count; ++i) {
      block[i] = focal_loss<kGamma>(static_cast<T>(x[first + i]), static_cast<T>(t[first + i]), p);
    }
    const int64_t full = count - count % kLanes;
    for (int64_t i = 0; i < full; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) lanes[j] += static_cast<double>(block[i + j]);
    }
    for (int64_t i = full; i < count; ++i) lanes[i - full] += static_cast<double>(block[i]);
  }
  double sum = 0.0;
  for (int j = 0; j < kLanes; ++j) sum += lanes[j];
  return sum;
}

// One loop per (incoming gradient per element or one for all, targets gradient or not), so
// each is straight-line code.
template <int kGamma, bool kPerElement, bool kTargets, typename S, typename T>
DETOPS_VECTOR_CLONES void grad_span(FocalParams<T> p, int64_t begin, int64_t end,
                                    const S* __restrict__ inputs, const S* __restrict__ targets,
                                    const S* __restrict__ grad, T shared_grad,
                                    S* __restrict__ grad_inputs, S* __restrict__ grad_targets) {
  for (int64_t i = begin; i < end; ++i) {
    const T g = kPerElement ? static_cast<T>(grad[i]) : shared_grad;
    const FocalGrad<T> d = focal_loss_grad<kGamma, kTargets>(static_cast<T>(inputs[i]),
                                                             static_cast<T>(targets[i]), g, p);
    grad_inputs[i] = static_cast<S>(d.inputs);
    if constexpr (kTargets) grad_targets[i] = static_cast<S>(d.targets);
  }
}

struct FocalLossBackend : detops::CpuBackend {
  template <int kGamma, typename S, typename T>
  static void loss(const FocalParams<T>& p, int64_t n, const S* inputs, const S* targets, S* out) {
    torch::stable::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      loss_span<kGamma, S, T>(p, begin, end, inputs, targets, out);
    });
  }

  template <int kGamma, typename S, typename T>
  static void reduce(const FocalParams<T>& p, int64_t n, const S* inputs, const S* targets,
                     double* partials, T divisor, S* out) {
    const int64_t count = chunks(n);
    const int64_t grain = std::max<int64_t>(1, kGrain / kReduceChunk);
    torch::stable::parallel_for(0, count, grain, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t first = c * kReduceChunk;
        const int64_t size = std::min(kReduceChunk, n - first);
        partials[c] = chunk_sum<kGamma, S, T>(p, size, inputs + first, targets + first);
      }
    });
    double total = 0.0;
    for (int64_t c = 0; c < count; ++c) total += partials[c];
    out[0] = static_cast<S>(static_cast<T>(total / static_cast<double>(divisor)));
  }

  template <int kGamma, typename S, typename T>
  static void backward(const FocalParams<T>& p, int64_t n, const S* inputs, const S* targets,
                       const S* grad, bool per_element, T divisor, S* grad_inputs,
                       S* grad_targets) {
    if (per_element) {
      if (grad_targets != nullptr) {
        run_backward<kGamma, true, true>(p, n, inputs, targets, grad, T(0), grad_inputs,
                                         grad_targets);
      } else {
        run_backward<kGamma, true, false>(p, n, inputs, targets, grad, T(0), grad_inputs,
                                          grad_targets);
      }
    } else {
      const T g = static_cast<T>(grad[0]) / divisor;
      if (grad_targets != nullptr) {
        run_backward<kGamma, false, true>(p, n, inputs, targets, grad, g, grad_inputs,
                                          grad_targets);
      } else {
        run_backward<kGamma, false, false>(p, n, inputs, targets, grad, g, grad_inputs,
                                           grad_targets);
      }
    }
  }

 private:
  template <int kGamma, bool kPerElement, bool kTargets, typename S, typename T>
  static void run_backward(const FocalParams<T>& p, int64_t n, const S* inputs, const S* targets,
                           const S* grad, T shared_grad, S* grad_inputs, S* grad_targets) {
    torch::stable::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      grad_span<kGamma, kPerElement, kTargets, S, T>(p, begin, end, inputs, targets, grad,
                                                     shared_grad, grad_inputs, grad_targets);
    });
  }
};

}  // namespace
}  // namespace detops::focal_loss::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  using Entry = detops::focal_loss::FocalLossEntry<detops::focal_loss::cpu::FocalLossBackend>;
  m.impl("sigmoid_focal_loss", TORCH_BOX(&Entry::sigmoid_focal_loss));
  m.impl("_sigmoid_focal_loss_backward", TORCH_BOX(&Entry::sigmoid_focal_loss_backward));
}
