// The entry points of soft_nms and batched_soft_nms, shared by the CPU and CUDA kernels:
// argument checks, the empty case and dtype dispatch happen here, once.
#pragma once

#include <detops/checks.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>

#include <string>
#include <tuple>

#include "nms_entry.h"
#include "nms_math.h"

namespace detops::nms {

inline SoftParams soft_params(const char* op, double iou_threshold, double sigma,
                              double score_threshold, const std::string& method) {
  check(method == "gaussian" || method == "linear", op,
        "method must be \"gaussian\" or \"linear\", got \"", method, "\"");
  const SoftMethod m = method == "linear" ? SoftMethod::kLinear : SoftMethod::kGaussian;
  // A NaN sigma fails too: every weight would be NaN.
  check(m != SoftMethod::kGaussian || sigma > 0, op,
        "sigma must be > 0 for the gaussian method, got ", sigma);
  return SoftParams{m, iou_threshold, sigma, score_threshold};
}

// Kernel provides `template <typename S> static std::tuple<Tensor, Tensor> run(boxes,
// scores, idxs_or_null, params)` for S the element type of boxes and scores.
template <typename Kernel>
struct SoftEntry {
  static std::tuple<Tensor, Tensor> dispatch(const char* op, const Tensor& boxes,
                                             const Tensor& scores, const Tensor* idxs,
                                             double iou_threshold, double sigma,
                                             double score_threshold, const std::string& method) {
    check_inputs(op, boxes, scores, idxs);
    const SoftParams params = soft_params(op, iou_threshold, sigma, score_threshold, method);
    if (boxes.size(0) == 0) {
      return {torch::stable::new_empty(boxes, {0}, ScalarType::Long),
              torch::stable::new_empty(scores, {0})};
    }
    return dispatch_floating(boxes.scalar_type(), op, "boxes", [&](auto tag) {
      using S = typename decltype(tag)::type;
      return Kernel::template run<S>(boxes, scores, idxs, params);
    });
  }

  static std::tuple<Tensor, Tensor> soft_nms(Tensor boxes, Tensor scores, double iou_threshold,
                                             double sigma, double score_threshold,
                                             std::string method) {
    return dispatch("detops.soft_nms", boxes, scores, nullptr, iou_threshold, sigma,
                    score_threshold, method);
  }

  static std::tuple<Tensor, Tensor> batched_soft_nms(Tensor boxes, Tensor scores, Tensor idxs,
                                                     double iou_threshold, double sigma,
                                                     double score_threshold, std::string method) {
    return dispatch("detops.batched_soft_nms", boxes, scores, &idxs, iou_threshold, sigma,
                    score_threshold, method);
  }
};

}  // namespace detops::nms
