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
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>

#include "focal_loss_entry.h"
#include "focal_loss_math.h"

namespace detops::focal_loss::cpu {
namespace {

// Elements per parallel_for piece: large enough that small problems stay on one thread.
inline constexpr int64_t kGrain = int64_t(1) << 14;
inline constexpr int kLanes = 8;

struct FocalLossBackend : detops::CpuBackend {
  template <int kGamma, typename S, typename T>
  static void loss(const FocalParams<T>& p, int64_t n, const S* inputs, const S* targets, S* out) {
    torch::stable::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      const FocalParams<T> q = p;  // a local: stays in registers across the stores
      for (int64_t i = begin; i < end; ++i) {
        out[i] = static_cast<S>(
            focal_loss<kGamma>(static_cast<T>(inputs[i]), static_cast<T>(targets[i]), q));
      }
    });
  }

  template <int kGamma, typename S, typename T>
  static void reduce(const FocalParams<T>& p, int64_t n, const S* inputs, const S* targets,
                     double* partials, T divisor, S* out) {
    const int64_t count = chunks(n);
    torch::stable::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
      const FocalParams<T> q = p;
      for (int64_t c = begin; c < end; ++c) {
        const int64_t first = c * kReduceChunk;
        const int64_t size = std::min(kReduceChunk, n - first);
        const S* x = inputs + first;
        const S* t = targets + first;
        double lanes[kLanes] = {};
        const int64_t full = size - size % kLanes;
        for (int64_t i = 0; i < full; i += kLanes) {
          for (int j = 0; j < kLanes; ++j) {
            lanes[j] += static_cast<double>(
                focal_loss<kGamma>(static_cast<T>(x[i + j]), static_cast<T>(t[i + j]), q));
          }
        }
        for (int64_t i = full; i < size; ++i) {
          lanes[i - full] += static_cast<double>(
              focal_loss<kGamma>(static_cast<T>(x[i]), static_cast<T>(t[i]), q));
        }
        double sum = 0.0;
        for (int j = 0; j < kLanes; ++j) sum += lanes[j];
        partials[c] = sum;
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
  // One loop per (incoming gradient per element or one for all, targets gradient or not),
  // so each inner loop is straight-line code.
  template <int kGamma, bool kPerElement, bool kTargets, typename S, typename T>
  static void run_backward(const FocalParams<T>& p, int64_t n, const S* inputs, const S* targets,
                           const S* grad, T shared_grad, S* grad_inputs, S* grad_targets) {
    torch::stable::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      const FocalParams<T> q = p;
      const T g0 = shared_grad;
      for (int64_t i = begin; i < end; ++i) {
        const T g = kPerElement ? static_cast<T>(grad[i]) : g0;
        const FocalGrad<T> d = focal_loss_grad<kGamma, kTargets>(static_cast<T>(inputs[i]),
                                                                 static_cast<T>(targets[i]), g, q);
        grad_inputs[i] = static_cast<S>(d.inputs);
        if constexpr (kTargets) grad_targets[i] = static_cast<S>(d.targets);
      }
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
