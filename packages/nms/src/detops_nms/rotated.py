"""Rotated boxes: ``box_iou_rotated``, ``nms_rotated``, ``batched_nms_rotated`` and the
conversion from mmcv's angle convention.

The convention, one for every rotated op in detops: a box is torchvision's ``cxcywhr``,
``(cx, cy, w, h, r)``, with ``r`` in degrees, and it is the quadrilateral that
``box_convert(boxes, "cxcywhr", "xyxyxyxy")`` gives: corners ``c -/+ (w/2) u -/+ (h/2) v``
with ``u = (cos r, -sin r)`` along the width and ``v = (sin r, cos r)`` along the height. On
an image (x to the right, y down) a positive ``r`` turns the box counter-clockwise as seen
on the screen.

mmcv's rotated ops take ``(x, y, w, h, a)`` with ``a`` in radians and, by default
(``clockwise=True``), a positive ``a`` turning the box clockwise on the screen: the same box
is ``r = -degrees(a)`` here (``clockwise=False``: ``r = degrees(a)``).
``from_mmcv_rotated`` / ``to_mmcv_rotated`` convert.

Defined behaviour on unusual input: a negative ``w`` or ``h`` is the same rectangle as its
absolute value; a box with a NaN or infinite number has NaN IoU with every box (it is
never suppressed and never suppresses); two boxes of zero area have IoU 0; every IoU is
computed in float64 from the boxes' values, and returned in their dtype.
"""

import math

import torch
from torch import Tensor

from . import _registrations  # noqa: F401  (fake kernels and autocast)
from ._category_ids import as_int64

__all__ = [
    "box_iou_rotated",
    "nms_rotated",
    "batched_nms_rotated",
    "from_mmcv_rotated",
    "to_mmcv_rotated",
]


def box_iou_rotated(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection-over-union of rotated boxes.

    Args:
        boxes1 (Tensor[N, 5]): boxes in ``(cx, cy, w, h, r)`` format, r in degrees
            (torchvision's ``'cxcywhr'``); float16, bfloat16, float32 or float64.
        boxes2 (Tensor[M, 5]): same format, dtype and device as ``boxes1``.

    Returns:
        Tensor[N, M]: the IoU of every pair, in the boxes' dtype: the exact intersection of
        the two rectangles (convex clipping in float64) over their union.

    Devices, determinism, ONNX: CPU and CUDA kernels (their IoUs agree to about 1e-15);
    repeatable (bitwise identical on every run) on both. ONNX export is refused with a
    ``ValueError`` naming the op: no standard operator intersects rotated boxes exactly.
    """
    return torch.ops.detops.box_iou_rotated(boxes1, boxes2)


def nms_rotated(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression of rotated boxes, with ``nms``'s contract: boxes are
    taken in decreasing score (a stable sort: NaN scores first, equal scores in input
    order) and a box is discarded when its IoU with a kept box is strictly greater than
    ``iou_threshold``. The IoU is ``box_iou_rotated``'s, compared in float64.

    Args:
        boxes (Tensor[N, 5]): boxes in ``(cx, cy, w, h, r)`` format, r in degrees; float16,
            bfloat16, float32 or float64.
        scores (Tensor[N]): one score per box, same dtype and device as ``boxes``.
        iou_threshold (float): IoU above which the lower-scoring box is discarded.

    Returns:
        Tensor[K] (int64): indices of the kept boxes, in decreasing order of score.

    Devices, determinism, ONNX: CPU and CUDA kernels (their IoUs agree to about 1e-15);
    repeatable (bitwise identical on every run) on both. ONNX export is refused with a
    ``ValueError`` naming the op: no standard operator intersects rotated boxes exactly.
    """
    return torch.ops.detops.nms_rotated(boxes, scores, iou_threshold)


def batched_nms_rotated(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """``nms_rotated`` applied independently to each category, in one native call (the
    categories run in parallel): boxes with different ``idxs`` never suppress each other.

    Args:
        boxes (Tensor[N, 5]): boxes in ``(cx, cy, w, h, r)`` format, r in degrees; float16,
            bfloat16, float32 or float64.
        scores (Tensor[N]): one score per box, same dtype and device as ``boxes``.
        idxs (Tensor[N]): integer category of each box (any integer dtype).
        iou_threshold (float): IoU above which a lower-scoring box of the same category is
            discarded.

    Returns:
        Tensor[K] (int64): indices of the kept boxes, in decreasing order of score (equal
        scores in input order).

    Devices, determinism, ONNX: CPU and CUDA kernels (their IoUs agree to about 1e-15);
    repeatable (bitwise identical on every run) on both. ONNX export is refused with a
    ``ValueError`` naming the op: no standard operator intersects rotated boxes exactly.
    """
    return torch.ops.detops.batched_nms_rotated(boxes, scores, as_int64(idxs), iou_threshold)


def from_mmcv_rotated(boxes: Tensor, clockwise: bool = True) -> Tensor:
    """mmcv's rotated boxes ``(x, y, w, h, a)`` (centre, size, angle in radians; positive
    clockwise on the screen when ``clockwise``, mmcv's default) as detops' ``cxcywhr``.

    Args:
        boxes (Tensor[..., 5]): mmcv boxes, floating dtype.
        clockwise (bool): whether a positive ``a`` turns clockwise on the screen (mmcv's
            default, True).

    Returns:
        Tensor[..., 5]: ``(cx, cy, w, h, r)``, r in degrees, same dtype and device.

    Devices, determinism, ONNX: plain torch operations (no native kernel), so it runs on
    any device torch supports (CPU, CUDA, ...), gives repeatable results (bitwise identical
    on every run), and exports to ONNX through torch's own exporter like any torch code.
    """
    degrees = boxes[..., 4] * (180.0 / math.pi)
    if clockwise:
        degrees = -degrees
    return torch.cat((boxes[..., :4], degrees.unsqueeze(-1)), dim=-1)


def to_mmcv_rotated(boxes: Tensor, clockwise: bool = True) -> Tensor:
    """detops' ``cxcywhr`` boxes as mmcv's ``(x, y, w, h, a)``, ``a`` in radians, positive
    clockwise on the screen when ``clockwise`` (mmcv's default).

    Args:
        boxes (Tensor[..., 5]): ``(cx, cy, w, h, r)`` boxes, r in degrees, floating dtype.
        clockwise (bool): whether the returned ``a`` is positive clockwise on the screen
            (mmcv's default, True).

    Returns:
        Tensor[..., 5]: mmcv's ``(x, y, w, h, a)``, same dtype and device.

    Devices, determinism, ONNX: plain torch operations (no native kernel), so it runs on
    any device torch supports (CPU, CUDA, ...), gives repeatable results (bitwise identical
    on every run), and exports to ONNX through torch's own exporter like any torch code.
    """
    radians = boxes[..., 4] * (math.pi / 180.0)
    if clockwise:
        radians = -radians
    return torch.cat((boxes[..., :4], radians.unsqueeze(-1)), dim=-1)
