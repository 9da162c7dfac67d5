"""Fake kernels and autocast for nms, batched_nms, nms_per_image, soft_nms and
batched_soft_nms, so they trace under torch.compile and torch.export and run under autocast.
None has a gradient: the outputs are integer indices (and soft-NMS's scores, which are not
differentiated).

The checks are nms_entry.h's and soft_nms_entry.h's, in their order and in their words
(detops_core.messages), so a bad call fails the same way compiled, exported or eager."""

import torch

from detops_core.autocast import register_autocast_float32
from detops_core.messages import FLOATING, check_floating, check_same_device, check_same_dtype, dtype_name, shape_str

from . import _library  # noqa: F401  (the ops must exist before we register against them)


def check_scores_shape(op: str, boxes: torch.Tensor, scores: torch.Tensor) -> None:
    # nms_entry.h: check_scores_shape (the rotated ops' fake kernels use it too)
    torch._check(
        scores.dim() == 1, lambda: f"{op}: scores must be a 1-D tensor of shape [N], got shape {shape_str(scores)}"
    )
    torch._check(
        scores.shape[0] == boxes.shape[0],
        lambda: (
            f"{op}: scores must have one entry per box: boxes has {boxes.shape[0]} boxes "
            f"but scores has {scores.shape[0]} entries"
        ),
    )


def check_scores_and_classes(op: str, boxes: torch.Tensor, scores: torch.Tensor, idxs=None) -> None:
    # nms_entry.h: check_scores_and_classes
    check_same_dtype(op, "boxes", boxes, "scores", scores)
    check_same_device(op, "boxes", boxes, "scores", scores)
    if idxs is None:
        return
    torch._check(
        idxs.dim() == 1 and idxs.shape[0] == boxes.shape[0],
        lambda: (
            f"{op}: idxs must be a 1-D tensor of shape [N] with one class index per box "
            f"(N = {boxes.shape[0]}), got shape {shape_str(idxs)}"
        ),
    )
    torch._check(idxs.dtype == torch.int64, lambda: f"{op}: idxs must be an int64 tensor, got {dtype_name(idxs.dtype)}")
    check_same_device(op, "boxes", boxes, "idxs", idxs)


def _check_inputs(op: str, boxes: torch.Tensor, scores: torch.Tensor, idxs=None) -> None:
    # nms_entry.h: check_inputs
    torch._check(
        boxes.dim() == 2 and boxes.shape[1] == 4,
        lambda: (
            f"{op}: boxes must be a 2-D tensor of shape [N, 4] in (x1, y1, x2, y2) format, got shape {shape_str(boxes)}"
        ),
    )
    check_scores_shape(op, boxes, scores)
    check_floating(op, "boxes", boxes)
    check_scores_and_classes(op, boxes, scores, idxs)


def _check_per_image_inputs(op: str, boxes: torch.Tensor, scores: torch.Tensor, idxs) -> None:
    # nms_entry.h: check_per_image_inputs
    torch._check(
        boxes.dim() == 3 and boxes.shape[2] == 4,
        lambda: f"{op}: boxes must be a 3-D tensor of shape [B, N, 4], got shape {shape_str(boxes)}",
    )
    torch._check(
        scores.dim() == 2 and scores.shape == boxes.shape[:2],
        lambda: (
            f"{op}: scores must be a 2-D tensor of shape [B, N] = [{boxes.shape[0]}, {boxes.shape[1]}], "
            f"got shape {shape_str(scores)}"
        ),
    )
    torch._check(
        boxes.dtype in FLOATING and boxes.dtype == scores.dtype,
        lambda: (
            f"{op}: boxes and scores must have the same floating-point dtype, "
            f"got {dtype_name(boxes.dtype)} and {dtype_name(scores.dtype)}"
        ),
    )
    check_same_device(op, "boxes", boxes, "scores", scores)
    if idxs is None:
        return
    torch._check(
        idxs.dtype == torch.int64 and idxs.shape == boxes.shape[:2],
        lambda: (
            f"{op}: idxs must be an int64 tensor of shape [B, N], "
            f"got {dtype_name(idxs.dtype)} of shape {shape_str(idxs)}"
        ),
    )
    check_same_device(op, "boxes", boxes, "idxs", idxs)


def _check_max_output(op: str, max_output) -> None:
    # nms_entry.h: limit_of
    torch._check(
        max_output is None or max_output >= 0, lambda: f"{op}: max_output must be None or >= 0, got {max_output}"
    )


def _check_soft(op: str, sigma: float, method: str) -> None:
    # soft_nms_entry.h: soft_params. C++ streams a double as printf's %g does.
    torch._check(
        method in ("gaussian", "linear"), lambda: f'{op}: method must be "gaussian" or "linear", got "{method}"'
    )
    torch._check(
        method != "gaussian" or sigma > 0, lambda: f"{op}: sigma must be > 0 for the gaussian method, got {sigma:g}"
    )


def kept_count(at_most: int, max_output=None):
    # How many boxes survive depends on the data: an unbacked size between 0 and at_most.
    kept = torch.library.get_ctx().new_dynamic_size()
    torch._check(kept <= at_most)
    if max_output is not None:
        torch._check(kept <= max_output)
    return kept


@torch.library.register_fake("detops::nms")
def _nms_fake(boxes, scores, iou_threshold, max_output=None):
    _check_inputs("detops.nms", boxes, scores)
    _check_max_output("detops.nms", max_output)
    return boxes.new_empty((kept_count(boxes.shape[0], max_output),), dtype=torch.int64)


@torch.library.register_fake("detops::batched_nms")
def _batched_nms_fake(boxes, scores, idxs, iou_threshold, max_output=None):
    _check_inputs("detops.batched_nms", boxes, scores, idxs)
    _check_max_output("detops.batched_nms", max_output)
    return boxes.new_empty((kept_count(boxes.shape[0], max_output),), dtype=torch.int64)


@torch.library.register_fake("detops::nms_per_image")
def _nms_per_image_fake(boxes, scores, idxs, iou_threshold, max_output=None):
    op = "detops.nms_per_image"
    _check_per_image_inputs(op, boxes, scores, idxs)
    _check_max_output(op, max_output)
    per_image = None if max_output is None else boxes.shape[0] * max_output
    kept = kept_count(boxes.shape[0] * boxes.shape[1], per_image)
    return boxes.new_empty((kept, 2), dtype=torch.int64)


def _soft_nms_fake(op: str, boxes, scores, idxs, sigma, method):
    _check_inputs(op, boxes, scores, idxs)
    _check_soft(op, sigma, method)
    kept = kept_count(boxes.shape[0])
    return boxes.new_empty((kept,), dtype=torch.int64), scores.new_empty((kept,))


@torch.library.register_fake("detops::soft_nms")
def _soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, score_threshold=0.001, method="gaussian"):
    return _soft_nms_fake("detops.soft_nms", boxes, scores, None, sigma, method)


@torch.library.register_fake("detops::batched_soft_nms")
def _batched_soft_nms(boxes, scores, idxs, iou_threshold=0.3, sigma=0.5, score_threshold=0.001, method="gaussian"):
    return _soft_nms_fake("detops.batched_soft_nms", boxes, scores, idxs, sigma, method)


# Under autocast, float16/bfloat16 boxes and scores are computed in float32 (IoU of large
# coordinates overflows float16); soft-NMS's decayed scores come back in the input's dtype.
# idxs and the kept indices are integers and left alone.
for _op in (
    "detops::nms",
    "detops::batched_nms",
    "detops::nms_per_image",
    "detops::soft_nms",
    "detops::batched_soft_nms",
):
    register_autocast_float32(_op)
