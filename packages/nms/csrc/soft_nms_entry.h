// The entry points of soft_nms and batched_soft_nms, shared by the CPU and CUDA kernels:
// argument checks (nms_checks.h), the empty case, the device guard and dtype dispatch
// happen here, once.
#pragma once

#include <detops/backend.h>
#include <detops/checks.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>

#include <string>
#include <tuple>

#include "nms_checks.h"
#include "nms_math.h"

namespace detops::nms {

// Backend (detops/backend.h) provides `template <typename S> static std::tuple<Tensor,
// Tensor> run(boxes, scores, idxs_or_null, params)` for S the element type of boxes and
// scores.
template <typename Backend>
struct SoftNmsEntry {
  static_assert(is_backend<Backend>());

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
    const typename Backend::Guard guard(boxes);
    return dispatch_floating(boxes.scalar_type(), op, "boxes", [&](auto tag) {
      using S = typename decltype(tag)::type;
      return Backend::template run<S>(boxes, scores, idxs, params);
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
