// The entry points of nms, batched_nms and nms_per_image, shared by the CPU and CUDA
// kernels: argument checks (nms_checks.h), the empty case, the device guard and dtype
// dispatch happen here, once.
#pragma once

#include <detops/backend.h>
#include <detops/checks.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>

#include <optional>

#include "nms_checks.h"

namespace detops::nms {

// Backend (detops/backend.h) provides `kMaxBoxes` and, for S the element type of boxes and
// scores, `template <typename S> static Tensor run(boxes, scores, idxs_or_null,
// iou_threshold, limit)` (the first `limit` kept indices) and `run_per_image` with the same
// arguments on [B, N, 4] boxes (limit per image; rows (image, box)).
template <typename Backend>
struct NmsEntry {
  static_assert(is_backend<Backend>());

  static Tensor dispatch(const char* op, const Tensor& boxes, const Tensor& scores,
                         const Tensor* idxs, double iou_threshold,
                         const std::optional<int64_t>& max_output) {
    check_inputs(op, boxes, scores, idxs);
    const int64_t limit = limit_of(op, max_output);
    const int64_t n = boxes.size(0);
    if (n == 0 || limit == 0) return torch::stable::new_empty(boxes, {0}, ScalarType::Long);
    check(n <= Backend::kMaxBoxes, op, "at most ", Backend::kMaxBoxes,
          " boxes are supported on this device, got ", n);
    const typename Backend::Guard guard(boxes);
    return dispatch_floating(boxes.scalar_type(), op, "boxes", [&](auto tag) {
      using S = typename decltype(tag)::type;
      return Backend::template run<S>(boxes, scores, idxs, iou_threshold, limit);
    });
  }

  static Tensor nms(Tensor boxes, Tensor scores, double iou_threshold,
                    std::optional<int64_t> max_output) {
    return dispatch("detops.nms", boxes, scores, nullptr, iou_threshold, max_output);
  }

  static Tensor batched_nms(Tensor boxes, Tensor scores, Tensor idxs, double iou_threshold,
                            std::optional<int64_t> max_output) {
    return dispatch("detops.batched_nms", boxes, scores, &idxs, iou_threshold, max_output);
  }

  static Tensor nms_per_image(Tensor boxes, Tensor scores, std::optional<Tensor> idxs,
                              double iou_threshold, std::optional<int64_t> max_output) {
    const char* op = "detops.nms_per_image";
    const Tensor* classes = idxs.has_value() ? &*idxs : nullptr;
    check_per_image_inputs(op, boxes, scores, classes);
    const int64_t limit = limit_of(op, max_output);
    if (boxes.size(0) == 0 || boxes.size(1) == 0 || limit == 0) {
      return torch::stable::new_empty(boxes, {0, 2}, ScalarType::Long);
    }
    check(boxes.size(1) <= Backend::kMaxBoxes, op, "at most ", Backend::kMaxBoxes,
          " boxes per image are supported on this device, got ", boxes.size(1));
    const typename Backend::Guard guard(boxes);
    return dispatch_floating(boxes.scalar_type(), op, "boxes", [&](auto tag) {
      using S = typename decltype(tag)::type;
      return Backend::template run_per_image<S>(boxes, scores, classes, iou_threshold, limit);
    });
  }
};

}  // namespace detops::nms
