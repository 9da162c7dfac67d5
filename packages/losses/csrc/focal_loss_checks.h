// Argument checks shared by the CPU and CUDA entry points of sigmoid_focal_loss and its
// backward. Every failure names the argument and what was expected.
#pragma once

#include <detops/checks.h>
#include <torch/csrc/stable/tensor.h>

#include <cmath>
#include <string>

namespace detops::focal_loss {

inline constexpr const char* kOp = "detops.sigmoid_focal_loss";
inline constexpr const char* kBackwardOp = "detops._sigmoid_focal_loss_backward";

enum class Reduction { kNone, kMean, kSum };

inline Reduction parse_reduction(const char* op, const std::string& reduction) {
  if (reduction == "none") return Reduction::kNone;
  if (reduction == "mean") return Reduction::kMean;
  if (reduction == "sum") return Reduction::kSum;
  fail(op, "reduction must be 'none', 'mean' or 'sum', got '", reduction, "'");
}

inline bool same_shape(const Tensor& a, const Tensor& b) {
  if (a.dim() != b.dim()) return false;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) != b.size(d)) return false;
  }
  return true;
}

// alpha weights positives by alpha and negatives by 1 - alpha; any negative alpha turns the
// weighting off (torchvision's Python wrapper accepts only [0, 1] and -1). NaN is refused:
// it would make every loss NaN without saying why.
inline void check_inputs(const char* op, const Tensor& inputs, const Tensor& targets,
                         double alpha) {
  check_floating(op, "inputs", inputs);
  check_floating(op, "targets", targets);
  check_same_dtype(op, "inputs", inputs, "targets", targets);
  check_same_device(op, "inputs", inputs, "targets", targets);
  check(same_shape(inputs, targets), op, "targets must have the shape of inputs ",
        shape_str(inputs), ", got ", shape_str(targets));
  check(!std::isnan(alpha) && alpha <= 1.0, op,
        "alpha must be in [0, 1] (or negative for no weighting), got ", alpha);
}

inline void check_grad_output(const Tensor& grad, const Tensor& inputs, Reduction reduction) {
  const char* op = kBackwardOp;
  check_same_dtype(op, "inputs", inputs, "grad_output", grad);
  check_same_device(op, "inputs", inputs, "grad_output", grad);
  if (reduction == Reduction::kNone) {
    check(same_shape(grad, inputs), op, "grad_output must have the shape of inputs ",
          shape_str(inputs), " (reduction 'none'), got ", shape_str(grad));
  } else {
    check(grad.dim() == 0, op, "grad_output must be a 0-dim tensor (reduction 'mean' or 'sum'), ",
          "got shape ", shape_str(grad));
  }
}

}  // namespace detops::focal_loss
