"""ONNX translations of generalized_box_iou_loss, distance_box_iou_loss and
complete_box_iou_loss (merged into detops_losses.onnx.translation_table()).

torchvision's formulas as the same sequence of element-wise standard operators on the last
axis's four coordinates: torch.maximum / minimum propagate NaN, which ONNX Max / Min do not
promise, so those are Where; the intersection is a Where on the same "both sides > 0" mask;
float16 / bfloat16 boxes compute in float32 (the loss is float32, as detops'). Exact per
pair but for Atan (complete_box_iou_loss), which ONNX Runtime may round differently in the
last place. "mean" and "sum" are ReduceSum (divided by the pair count, at least 1, so no
pairs give 0 as torchvision's ``0.0 * sum``), summed in the runtime's own order where detops
sums in double: they agree to the compute type's rounding. reduction and eps are fixed in
the graph; shapes may be dynamic.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir
import torch
from onnxscript import opset18 as op
from onnxscript.onnx_types import FLOAT

_CIOU_DIOU_EPS = 1e-7  # complete_box_iou_loss's DIoU part: torchvision passes no eps


def _const(value: float, like):
    # A float64 constant cast to the compute type: eps rounds as torch rounds a Python float.
    return op.CastLike(op.Constant(value=onnx_ir.tensor(np.array(value, dtype=np.float64))), like)


def _coords(boxes):
    narrow = boxes.dtype is not None and boxes.dtype.name in ("FLOAT16", "BFLOAT16")
    t = op.Cast(boxes, to=FLOAT.dtype) if narrow else boxes
    return [op.Gather(t, op.Constant(value_int=k), axis=-1) for k in range(4)]


def _nan_max(a, b):
    return op.Where(op.Or(op.Greater(a, b), op.IsNaN(a)), a, b)


def _nan_min(a, b):
    return op.Where(op.Or(op.Less(a, b), op.IsNaN(a)), a, b)


def _parts(boxes1, boxes2):
    (x1, y1, x2, y2), (x1g, y1g, x2g, y2g) = _coords(boxes1), _coords(boxes2)
    xk1, yk1 = _nan_max(x1, x1g), _nan_max(y1, y1g)
    xk2, yk2 = _nan_min(x2, x2g), _nan_min(y2, y2g)
    overlap = op.And(op.Greater(yk2, yk1), op.Greater(xk2, xk1))
    inter = op.Where(overlap, op.Mul(op.Sub(xk2, xk1), op.Sub(yk2, yk1)), _const(0.0, x1))
    union = op.Sub(op.Add(op.Mul(op.Sub(x2, x1), op.Sub(y2, y1)), op.Mul(op.Sub(x2g, x1g), op.Sub(y2g, y1g))), inter)
    cw = op.Sub(_nan_max(x2, x2g), _nan_min(x1, x1g))
    ch = op.Sub(_nan_max(y2, y2g), _nan_min(y1, y1g))
    return inter, union, cw, ch, (x1, y1, x2, y2), (x1g, y1g, x2g, y2g)


def _reduce(name: str, loss, reduction: str):
    if reduction == "none":
        return loss
    if reduction not in ("mean", "sum"):
        raise ValueError(f"detops.onnx: {name}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    total = op.ReduceSum(op.Reshape(loss, [-1]), keepdims=0)
    if reduction == "sum":
        return total
    count = op.CastLike(op.Max(op.Size(loss), op.Constant(value_int=1)), total)
    return op.Div(total, count)


def generalized_box_iou_loss(boxes1, boxes2, reduction: str = "none", eps: float = 1e-7):
    """Translation of ``detops::generalized_box_iou_loss``."""
    inter, union, cw, ch, _, _ = _parts(boxes1, boxes2)
    iou = op.Div(inter, op.Add(union, _const(eps, union)))
    area_c = op.Mul(cw, ch)
    miou = op.Sub(iou, op.Div(op.Sub(area_c, union), op.Add(area_c, _const(eps, area_c))))
    return _reduce("generalized_box_iou_loss", op.Sub(_const(1.0, miou), miou), reduction)


def _diou_loss(boxes1, boxes2, eps: float):
    inter, union, cw, ch, p, g = _parts(boxes1, boxes2)
    iou = op.Div(inter, op.Add(union, _const(eps, union)))
    diagonal = op.Add(op.Add(op.Mul(cw, cw), op.Mul(ch, ch)), _const(eps, cw))
    two = _const(2.0, cw)
    dx = op.Sub(op.Div(op.Add(p[2], p[0]), two), op.Div(op.Add(g[0], g[2]), two))
    dy = op.Sub(op.Div(op.Add(p[3], p[1]), two), op.Div(op.Add(g[1], g[3]), two))
    centres = op.Add(op.Mul(dx, dx), op.Mul(dy, dy))
    return op.Add(op.Sub(_const(1.0, iou), iou), op.Div(centres, diagonal)), iou, p, g


def distance_box_iou_loss(boxes1, boxes2, reduction: str = "none", eps: float = 1e-7):
    """Translation of ``detops::distance_box_iou_loss``."""
    loss, _, _, _ = _diou_loss(boxes1, boxes2, eps)
    return _reduce("distance_box_iou_loss", loss, reduction)


def complete_box_iou_loss(boxes1, boxes2, reduction: str = "none", eps: float = 1e-7):
    """Translation of ``detops::complete_box_iou_loss``."""
    loss, iou, p, g = _diou_loss(boxes1, boxes2, _CIOU_DIOU_EPS)
    angle_g = op.Atan(op.Div(op.Sub(g[2], g[0]), op.Sub(g[3], g[1])))
    angle_p = op.Atan(op.Div(op.Sub(p[2], p[0]), op.Sub(p[3], p[1])))
    d = op.Sub(angle_g, angle_p)
    v = op.Mul(_const(4 / math.pi**2, d), op.Mul(d, d))
    alpha = op.Div(v, op.Add(op.Add(op.Sub(_const(1.0, iou), iou), v), _const(eps, v)))
    return _reduce("complete_box_iou_loss", op.Add(loss, op.Mul(alpha, v)), reduction)


def translation_table() -> dict:
    """``{torch.ops.detops.<op>.default: onnxscript function}`` for the box IoU losses."""
    ops = torch.ops.detops
    return {
        ops.generalized_box_iou_loss.default: generalized_box_iou_loss,
        ops.distance_box_iou_loss.default: distance_box_iou_loss,
        ops.complete_box_iou_loss.default: complete_box_iou_loss,
    }
