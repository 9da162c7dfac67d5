"""Fake kernels and autocast for the NMS ops, so they trace under torch.compile and
torch.export and run under autocast. NMS has no gradient: its output is integer indices."""

import torch

from detops_core.autocast import register_autocast_float32

from . import _library  # noqa: F401  (the ops must exist before we register against them)


def _check_inputs(op: str, boxes: torch.Tensor, scores: torch.Tensor) -> None:
    torch._check(
        boxes.dim() == 2 and boxes.shape[1] == 4,
        lambda: f"{op}: boxes must be a 2-D tensor of shape [N, 4], got shape {list(boxes.shape)}",
    )
    torch._check(
        scores.dim() == 1 and scores.shape[0] == boxes.shape[0],
        lambda: (
            f"{op}: scores must be a 1-D tensor of shape [N] with N = {boxes.shape[0]}, got shape {list(scores.shape)}"
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


def _check_max_output(op: str, max_output) -> None:
    torch._check(
        max_output is None or max_output >= 0, lambda: f"{op}: max_output must be None or >= 0, got {max_output}"
    )


def _kept_indices(boxes: torch.Tensor, max_output=None) -> torch.Tensor:
    # How many boxes survive depends on the data: an unbacked size between 0 and N.
    kept = torch.library.get_ctx().new_dynamic_size()
    torch._check(kept <= boxes.shape[0])
    if max_output is not None:
        torch._check(kept <= max_output)
    return boxes.new_empty((kept,), dtype=torch.int64)


@torch.library.register_fake("detops::nms")
def _nms_fake(boxes, scores, iou_threshold, max_output=None):
    _check_inputs("detops.nms", boxes, scores)
    _check_max_output("detops.nms", max_output)
    return _kept_indices(boxes, max_output)


@torch.library.register_fake("detops::batched_nms")
def _batched_nms_fake(boxes, scores, idxs, iou_threshold, max_output=None):
    _check_inputs("detops.batched_nms", boxes, scores)
    _check_max_output("detops.batched_nms", max_output)
    torch._check(
        idxs.device == boxes.device,
        lambda: f"detops.batched_nms: boxes and idxs must be on the same device, got {boxes.device} and {idxs.device}",
    )
    torch._check(
        idxs.dim() == 1 and idxs.shape[0] == boxes.shape[0] and idxs.dtype == torch.int64,
        lambda: (
            f"detops.batched_nms: idxs must be an int64 tensor of shape [N], "
            f"got {idxs.dtype} of shape {list(idxs.shape)}"
        ),
    )
    return _kept_indices(boxes, max_output)


# Under autocast, float16/bfloat16 boxes and scores are computed in float32 (IoU of large
# coordinates overflows float16). idxs and the kept indices are integers and left alone.
for _op in ("detops::nms", "detops::batched_nms"):
    register_autocast_float32(_op)
