"""Fake kernels and autocast for soft_nms, batched_soft_nms and nms_per_image (the NMS
variants of issue 16). Their messages are the native entry points' word for word."""

import torch

from detops_core.autocast import register_autocast_float32

from . import _library  # noqa: F401  (the ops must exist before we register against them)
from ._meta import _check_inputs, _check_max_output


def _check_soft(op: str, sigma: float, method: str) -> None:
    torch._check(
        method in ("gaussian", "linear"), lambda: f'{op}: method must be "gaussian" or "linear", got "{method}"'
    )
    torch._check(
        method != "gaussian" or sigma > 0,
        lambda: f"{op}: sigma must be > 0 for the gaussian method, got {sigma:g}",
    )


def _check_idxs(op: str, boxes: torch.Tensor, idxs: torch.Tensor, shape: str) -> None:
    torch._check(
        idxs.device == boxes.device,
        lambda: f"{op}: boxes and idxs must be on the same device, got {boxes.device} and {idxs.device}",
    )
    torch._check(
        idxs.dtype == torch.int64 and idxs.shape == boxes.shape[:-1],
        lambda: f"{op}: idxs must be an int64 tensor of shape {shape}, got {idxs.dtype} of shape {list(idxs.shape)}",
    )


def _kept(boxes: torch.Tensor, scores: torch.Tensor):
    kept = torch.library.get_ctx().new_dynamic_size()
    torch._check(kept <= boxes.shape[0])
    return boxes.new_empty((kept,), dtype=torch.int64), scores.new_empty((kept,))


@torch.library.register_fake("detops::soft_nms")
def _soft_nms_fake(boxes, scores, iou_threshold=0.3, sigma=0.5, score_threshold=0.001, method="gaussian"):
    _check_inputs("detops.soft_nms", boxes, scores)
    _check_soft("detops.soft_nms", sigma, method)
    return _kept(boxes, scores)


@torch.library.register_fake("detops::batched_soft_nms")
def _batched_soft_nms_fake(boxes, scores, idxs, iou_threshold=0.3, sigma=0.5, score_threshold=0.001, method="gaussian"):
    _check_inputs("detops.batched_soft_nms", boxes, scores)
    _check_soft("detops.batched_soft_nms", sigma, method)
    _check_idxs("detops.batched_soft_nms", boxes, idxs, "[N]")
    return _kept(boxes, scores)


@torch.library.register_fake("detops::nms_per_image")
def _nms_per_image_fake(boxes, scores, idxs, iou_threshold, max_output=None):
    op = "detops.nms_per_image"
    torch._check(
        boxes.dim() == 3 and boxes.shape[2] == 4,
        lambda: f"{op}: boxes must be a 3-D tensor of shape [B, N, 4], got shape {list(boxes.shape)}",
    )
    torch._check(
        scores.dim() == 2 and scores.shape == boxes.shape[:2],
        lambda: (
            f"{op}: scores must be a 2-D tensor of shape [B, N] = {list(boxes.shape[:2])}, "
            f"got shape {list(scores.shape)}"
        ),
    )
    torch._check(
        boxes.device == scores.device,
        lambda: f"{op}: boxes and scores must be on the same device, got {boxes.device} and {scores.device}",
    )
    torch._check(
        boxes.is_floating_point() and boxes.dtype == scores.dtype,
        lambda: f"{op}: boxes and scores must have the same floating-point dtype, got {boxes.dtype} and {scores.dtype}",
    )
    _check_max_output(op, max_output)
    if idxs is not None:
        _check_idxs(op, boxes, idxs, "[B, N]")
    kept = torch.library.get_ctx().new_dynamic_size()
    torch._check(kept <= boxes.shape[0] * boxes.shape[1])
    if max_output is not None:
        torch._check(kept <= boxes.shape[0] * max_output)
    return boxes.new_empty((kept, 2), dtype=torch.int64)


# float16/bfloat16 are computed in float32; soft-NMS's decayed scores come back in the
# input's dtype, the indices unchanged.
for _op in ("detops::soft_nms", "detops::batched_soft_nms", "detops::nms_per_image"):
    register_autocast_float32(_op)
