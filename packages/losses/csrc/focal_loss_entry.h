// The device-independent half of sigmoid_focal_loss: the op entry points (FocalLossEntry),
// argument checks, dtype and gamma dispatch, output allocation and the device guard. The
// device-specific half is a Backend (detops/backend.h) holding only loops (CPU) or thread
// mapping and launches (CUDA):
//
//   template <int kGamma, typename S, typename T> static void loss(
//       const FocalParams<T>&, int64_t n, const S* inputs, const S* targets, S* out /* [n] */);
//   template <int kGamma, typename S, typename T> static void reduce(
//       const FocalParams<T>&, int64_t n, const S* inputs, const S* targets,
//       double* partials /* [chunks(n)] */, T divisor, S* out /* [1] */);
//   template <int kGamma, typename S, typename T> static void backward(
//       const FocalParams<T>&, int64_t n, const S* inputs, const S* targets,
//       const S* grad /* [n], or [1] when !per_element */, bool per_element, T divisor,
//       S* grad_inputs /* [n] */, S* grad_targets /* [n], or nullptr */);
//
// reduce() sums the losses of each chunk of kReduceChunk consecutive elements in double into
// partials[chunk], then the partials in chunk order, and writes the sum divided by
// `divisor` (n for "mean", 1 for "sum"): the chunks do not depend on the number of threads
// or the grid, so the result is bitwise repeatable. In backward() an element's incoming
// gradient is grad[i], or grad[0] / divisor for the reductions.
//
// S is the tensor dtype, T the computation type (float32 for float16/bfloat16). Every
// pointer is to contiguous memory on inputs' device.
#pragma once

#include <detops/backend.h>
#include <detops/contiguous.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <string>
#include <tuple>
#include <vector>

#include "focal_loss_checks.h"
#include "focal_loss_math.h"

namespace detops::focal_loss {

using torch::stable::Tensor;

// Elements per partial sum of the reductions: small enough that the chunks of a DETR-sized
// head (300 x 91, 14 chunks) split evenly between threads (with 8192 elements, 4 chunks went
// 2 and 2 with the last one ragged, one thread doing 60% of the work).
inline constexpr int64_t kReduceChunk = 2048;

inline int64_t chunks(int64_t n) {
  return (n + kReduceChunk - 1) / kReduceChunk;
}

template <typename T>
FocalParams<T> params(double alpha, double gamma) {
  return {static_cast<T>(alpha), static_cast<T>(gamma), alpha >= 0.0 ? T(1) : T(0)};
}

// Calls body(std::integral_constant<int, kGamma>) for the gamma at hand.
template <typename F>
void dispatch_gamma(double gamma, F&& body) {
  if (gamma == 0.0) {
    body(std::integral_constant<int, kGammaZero>{});
  } else if (gamma == 2.0) {
    body(std::integral_constant<int, kGammaTwo>{});
  } else {
    body(std::integral_constant<int, kGammaAny>{});
  }
}

template <typename Backend>
Tensor forward(const Tensor& inputs_in, const Tensor& targets_in, double alpha, double gamma,
               const std::string& reduction_name) {
  const Reduction reduction = parse_reduction(kOp, reduction_name);
  check_inputs(kOp, inputs_in, targets_in, alpha);
  const int64_t n = inputs_in.numel();
  if (reduction == Reduction::kNone) {
    Tensor out = torch::stable::new_empty(inputs_in, inputs_in.sizes());
    if (n == 0) return out;
    const Tensor inputs = detops::contiguous(inputs_in);
    const Tensor targets = detops::contiguous(targets_in);
    dispatch_floating(inputs.scalar_type(), kOp, "inputs", [&](auto tag) {
      using S = typename decltype(tag)::type;
      using T = acc_t<S>;
      dispatch_gamma(gamma, [&](auto g) {
        Backend::template loss<decltype(g)::value, S, T>(
            params<T>(alpha, gamma), n, inputs.const_data_ptr<S>(), targets.const_data_ptr<S>(),
            out.mutable_data_ptr<S>());
      });
    });
    return out;
  }
  Tensor out = torch::stable::new_empty(inputs_in, std::vector<int64_t>{});
  const Tensor inputs = detops::contiguous(inputs_in);
  const Tensor targets = detops::contiguous(targets_in);
  dispatch_floating(inputs.scalar_type(), kOp, "inputs", [&](auto tag) {
    using S = typename decltype(tag)::type;
    using T = acc_t<S>;
    // An empty sum is 0, an empty mean 0 / 0 = NaN (as torch's).
    const T divisor = reduction == Reduction::kMean ? static_cast<T>(n) : T(1);
    Tensor partials =
        torch::stable::new_empty(inputs, {chunks(n) > 0 ? chunks(n) : 1}, ScalarType::Double);
    dispatch_gamma(gamma, [&](auto g) {
      Backend::template reduce<decltype(g)::value, S, T>(
          params<T>(alpha, gamma), n, inputs.const_data_ptr<S>(), targets.const_data_ptr<S>(),
          partials.mutable_data_ptr<double>(), divisor, out.mutable_data_ptr<S>());
    });
  });
  return out;
}

// (grad_inputs, grad_targets); grad_targets is empty ([0]) unless need_targets.
template <typename Backend>
std::tuple<Tensor, Tensor> backward(const Tensor& grad_in, const Tensor& inputs_in,
                                    const Tensor& targets_in, double alpha, double gamma,
                                    const std::string& reduction_name, bool need_targets) {
  const Reduction reduction = parse_reduction(kBackwardOp, reduction_name);
  check_inputs(kBackwardOp, inputs_in, targets_in, alpha);
  check_grad_output(grad_in, inputs_in, reduction);
  const int64_t n = inputs_in.numel();
  Tensor grad_inputs = torch::stable::new_empty(inputs_in, inputs_in.sizes());
  Tensor grad_targets = need_targets ? torch::stable::new_empty(targets_in, targets_in.sizes())
                                     : torch::stable::new_empty(targets_in, {0});
  if (n == 0) return {grad_inputs, grad_targets};
  const Tensor inputs = detops::contiguous(inputs_in);
  const Tensor targets = detops::contiguous(targets_in);
  const Tensor grad = detops::contiguous(grad_in);
  dispatch_floating(inputs.scalar_type(), kBackwardOp, "inputs", [&](auto tag) {
    using S = typename decltype(tag)::type;
    using T = acc_t<S>;
    const T divisor = reduction == Reduction::kMean ? static_cast<T>(n) : T(1);
    dispatch_gamma(gamma, [&](auto g) {
      Backend::template backward<decltype(g)::value, S, T>(
          params<T>(alpha, gamma), n, inputs.const_data_ptr<S>(), targets.const_data_ptr<S>(),
          grad.const_data_ptr<S>(), reduction == Reduction::kNone, divisor,
          grad_inputs.mutable_data_ptr<S>(),
          need_targets ? grad_targets.mutable_data_ptr<S>() : nullptr);
    });
  });
  return {grad_inputs, grad_targets};
}

// The op entry points of both devices: a device file registers FocalLossEntry<its backend>,
// whose functions are named after the ops.
template <typename Backend>
struct FocalLossEntry {
  static_assert(is_backend<Backend>());

  static Tensor sigmoid_focal_loss(Tensor inputs, Tensor targets, double alpha, double gamma,
                                   std::string reduction) {
    const typename Backend::Guard guard(inputs);
    return forward<Backend>(inputs, targets, alpha, gamma, reduction);
  }

  static std::tuple<Tensor, Tensor> sigmoid_focal_loss_backward(Tensor grad_output, Tensor inputs,
                                                                Tensor targets, double alpha,
                                                                double gamma, std::string reduction,
                                                                bool need_targets) {
    const typename Backend::Guard guard(inputs);
    return backward<Backend>(grad_output, inputs, targets, alpha, gamma, reduction, need_targets);
  }
};

}  // namespace detops::focal_loss
