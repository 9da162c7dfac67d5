"""Box utilities used next to NMS, with torchvision.ops semantics (plain PyTorch).

Axis-aligned formats only: ``'xyxy'``, ``'xywh'``, ``'cxcywh'``. torchvision's rotated
formats (``'xywhr'``, ``'cxcywhr'``, ``'xyxyxyxy'``) raise NotImplementedError here.
"""

from typing import Tuple

import torch
from torch import Tensor


def _upcast(t: Tensor) -> Tensor:
    # Products of coordinates overflow narrow types: float16 -> float32, int8/16 -> int32.
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def _check_format(fmt: str, what: str) -> None:
    # Tuple literals, not module constants: TorchScript cannot read module-level tuples.
    if fmt in ("xywhr", "cxcywhr", "xyxyxyxy"):
        raise NotImplementedError(what + ": rotated box format '" + fmt + "' is not supported by detops")
    if fmt not in ("xyxy", "xywh", "cxcywh"):
        raise ValueError(what + ": unsupported box format '" + fmt + "'; expected 'xyxy', 'xywh' or 'cxcywh'")


def _cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def _xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def _xywh_to_xyxy(boxes: Tensor) -> Tensor:
    x, y, w, h = boxes.unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


def _xyxy_to_xywh(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``boxes`` (Tensor[..., 4]) from ``in_fmt`` to ``out_fmt``, each one of
    ``'xyxy'`` (corners), ``'xywh'`` (top-left corner, width, height) and ``'cxcywh'``
    (centre, width, height). Same format in and out returns a copy."""
    _check_format(in_fmt, "box_convert in_fmt")
    _check_format(out_fmt, "box_convert out_fmt")
    if in_fmt == out_fmt:
        return boxes.clone()
    if in_fmt == "xywh":
        boxes = _xywh_to_xyxy(boxes)
    elif in_fmt == "cxcywh":
        boxes = _cxcywh_to_xyxy(boxes)
    if out_fmt == "xywh":
        boxes = _xyxy_to_xywh(boxes)
    elif out_fmt == "cxcywh":
        boxes = _xyxy_to_cxcywh(boxes)
    return boxes


def box_area(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    """Area of each box in ``boxes`` (Tensor[..., 4]) given in format ``fmt``; narrow
    dtypes are upcast (float16 -> float32, small ints -> int32) before multiplying."""
    _check_format(fmt, "box_area fmt")
    boxes = _upcast(boxes)
    if fmt == "xyxy":
        return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return boxes[..., 2] * boxes[..., 3]


def _inter_union(boxes1: Tensor, boxes2: Tensor, fmt: str) -> Tuple[Tensor, Tensor]:
    area1 = box_area(boxes1, fmt=fmt)
    area2 = box_area(boxes2, fmt=fmt)
    if fmt == "xyxy":
        lo1, hi1 = boxes1[..., None, :2], boxes1[..., None, 2:]
        lo2, hi2 = boxes2[..., None, :, :2], boxes2[..., None, :, 2:]
    elif fmt == "xywh":
        lo1 = boxes1[..., None, :2]
        hi1 = boxes1[..., None, :2] + boxes1[..., None, 2:]
        lo2 = boxes2[..., None, :, :2]
        hi2 = boxes2[..., None, :, :2] + boxes2[..., None, :, 2:]
    else:
        lo1 = boxes1[..., None, :2] - boxes1[..., None, 2:] / 2
        hi1 = boxes1[..., None, :2] + boxes1[..., None, 2:] / 2
        lo2 = boxes2[..., None, :, :2] - boxes2[..., None, :, 2:] / 2
        hi2 = boxes2[..., None, :, :2] + boxes2[..., None, :, 2:] / 2
    wh = _upcast(torch.min(hi1, hi2) - torch.max(lo1, lo2)).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., None] + area2[..., None, :] - inter
    return inter, union


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Pairwise intersection-over-union: Tensor[..., N, M] for boxes1 Tensor[..., N, 4] and
    boxes2 Tensor[..., M, 4], both in format ``fmt``."""
    _check_format(fmt, "box_iou fmt")
    inter, union = _inter_union(boxes1, boxes2, fmt)
    return inter / union


def clip_boxes_to_image(boxes: Tensor, size: Tuple[int, int]) -> Tensor:
    """Clamp ``(x1, y1, x2, y2)`` boxes (Tensor[..., 4]) to an image of size
    ``(height, width)``: x into [0, width], y into [0, height]."""
    height, width = size
    xs = boxes[..., 0::2].clamp(min=0, max=width)
    ys = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((xs, ys), dim=boxes.dim()).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (int64, ascending) of the ``(x1, y1, x2, y2)`` boxes whose width and height
    are both at least ``min_size``."""
    ws = boxes[..., 2] - boxes[..., 0]
    hs = boxes[..., 3] - boxes[..., 1]
    return torch.where((ws >= min_size) & (hs >= min_size))[0]
