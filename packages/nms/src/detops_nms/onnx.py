"""ONNX export of ``detops.nms`` and ``detops.batched_nms`` (needs onnx and onnxscript), and of
the pairwise ``generalized_box_iou``, ``distance_box_iou``, ``complete_box_iou`` (see their
translations below).

``torch.onnx.export(model, args, dynamo=True, custom_translation_table=translation_table())``
maps both ops to the standard ``NonMaxSuppression`` operator with exactly detops' results:

- The order is detops' stable descending sort, built in the graph (NaN scores first, then
  ``TopK``, whose ties keep the lower index first by the ONNX specification).
  ``NonMaxSuppression`` gets the boxes in that order with strictly decreasing stand-in
  scores, so it never has to break a tie itself.
- ``NonMaxSuppression`` compares a float32 IoU with a float32 threshold; detops compares it
  with the double ``iou_threshold``. The threshold is rounded down to float32, which makes
  ``iou > threshold`` give the same answer for every float32 IoU.
- ``NonMaxSuppression`` reorders each box's corners and skips pairs without overlap; in
  detops a box with ``x2 < x1``, ``y2 < y1`` or a NaN coordinate never overlaps anything
  (its IoU is 0 or NaN). Such boxes are replaced by an empty box before the operator, which
  gives the same result for ``iou_threshold >= 0``.
- ``batched_nms`` gives each distinct category one row of a ``[1, C, N]`` score tensor (C
  distinct categories, so ``4 * C * N`` bytes), stand-in scores on that row for the
  category's boxes and 0 elsewhere, below the 0.5 score threshold. Kept boxes are then put
  back in detops' order. No coordinate offsets: NaN, huge coordinates and any category
  values are exact.

- ``max_output=k``: for ``nms`` the operator's ``max_output_boxes_per_class`` is k; it
  selects greedily in decreasing (stand-in) score and stops at k, so it returns the first k
  kept boxes, as detops does. For ``batched_nms`` that argument would limit each category,
  not the total: the translation keeps the unlimited operator and slices the first k of the
  result (exact, without stopping early).

What cannot be exact raises ``ValueError`` at export time: a negative or NaN
``iou_threshold`` (the operator never suppresses boxes without overlap; detops would), and
float64 boxes (the operator computes in float32). float16/bfloat16 are computed in float32,
as in detops. ``nms_per_image`` is one ``batched_nms`` over the flattened batch (see its
translation). ``soft_nms`` and ``batched_soft_nms`` have no standard operator (ONNX's only
NMS discards boxes, it never decays scores): exporting either raises ``ValueError`` naming
the op. So do the rotated-box ops
(``box_iou_rotated``, ``nms_rotated``, ``batched_nms_rotated``): no standard operator
intersects rotated rectangles.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import onnx_ir
import torch
from onnxscript import opset18 as op
from onnxscript.onnx_types import FLOAT, INT64

_ALL = 2**63 - 1  # max_output_boxes_per_class: no limit


def _threshold(name: str, iou_threshold: float) -> float:
    if not iou_threshold >= 0.0:
        raise ValueError(
            f"detops.onnx: {name} with iou_threshold={iou_threshold} cannot be exported exactly: "
            "ONNX NonMaxSuppression never suppresses boxes that do not overlap (needs iou_threshold >= 0)"
        )
    t = np.float32(iou_threshold)
    if float(t) > iou_threshold:
        t = np.nextafter(t, np.float32(-math.inf))
    return float(t)


def _float32_boxes(name: str, boxes):
    if boxes.dtype is not None and boxes.dtype.name == "DOUBLE":
        raise ValueError(
            f"detops.onnx: {name} of float64 boxes cannot be exported exactly (ONNX NonMaxSuppression "
            "computes IoU in float32); cast boxes and scores to float32 first"
        )
    return op.Cast(boxes, to=FLOAT.dtype)


def _score_order(scores):
    """Box indices in detops' order: NaN scores first, then a stable descending sort."""
    s = op.Cast(scores, to=FLOAT.dtype)
    nan = op.IsNaN(s)
    n = op.Shape(s)
    _, by_score = op.TopK(op.Where(nan, op.Constant(value_float=-math.inf), s), n, largest=1, sorted=1)
    ranked = op.Compress(by_score, op.Not(op.Gather(nan, by_score)))
    return op.Concat(op.Reshape(op.NonZero(nan), [-1]), ranked, axis=0)


def _sorted_boxes(boxes, order):
    """Boxes in `order`; those that overlap nothing in detops become empty boxes."""
    b = op.Gather(boxes, order)
    x1 = op.Gather(b, op.Constant(value_int=0), axis=1)
    y1 = op.Gather(b, op.Constant(value_int=1), axis=1)
    x2 = op.Gather(b, op.Constant(value_int=2), axis=1)
    y2 = op.Gather(b, op.Constant(value_int=3), axis=1)
    inert = op.Not(op.And(op.GreaterOrEqual(x2, x1), op.GreaterOrEqual(y2, y1)))
    return op.Where(op.Unsqueeze(inert, [1]), op.Constant(value_float=0.0), b)


def _stand_in_scores(order):
    # N - position: strictly decreasing, exact in float32 for fewer than 2^24 boxes.
    n = op.Cast(op.Shape(order), to=FLOAT.dtype)
    count = op.Squeeze(op.Shape(order))
    positions = op.Cast(op.Range(op.Constant(value_int=0), count, op.Constant(value_int=1)), to=FLOAT.dtype)
    return op.Sub(n, positions)


def _selected(selected):
    return op.Reshape(op.Slice(selected, [2], [3], [1]), [-1])


def nms(boxes, scores, iou_threshold: float, max_output: Optional[int] = None):
    """Translation of ``detops::nms``."""
    threshold = _threshold("nms", iou_threshold)
    order = _score_order(scores)
    sorted_boxes = _sorted_boxes(_float32_boxes("nms", boxes), order)
    selected = op.NonMaxSuppression(
        op.Unsqueeze(sorted_boxes, [0]),
        op.Reshape(_stand_in_scores(order), [1, 1, -1]),
        op.Constant(value_ints=[_ALL if max_output is None else max_output]),
        op.Constant(value_floats=[threshold]),
    )
    # Selected in decreasing stand-in score: increasing position, detops' order.
    return op.Gather(order, _selected(selected))


def batched_nms(boxes, scores, idxs, iou_threshold: float, max_output: Optional[int] = None):
    """Translation of ``detops::batched_nms``."""
    threshold = _threshold("batched_nms", iou_threshold)
    order = _score_order(scores)
    sorted_boxes = _sorted_boxes(_float32_boxes("batched_nms", boxes), order)
    distinct, _, category, _ = op.Unique(op.Cast(idxs, to=INT64.dtype), sorted=1)
    category = op.Gather(op.Reshape(category, [-1]), order)
    rows = op.Range(op.Constant(value_int=0), op.Squeeze(op.Shape(distinct)), op.Constant(value_int=1))
    member = op.Equal(op.Unsqueeze(rows, [1]), op.Unsqueeze(category, [0]))
    per_class = op.Where(member, op.Unsqueeze(_stand_in_scores(order), [0]), op.Constant(value_float=0.0))
    selected = op.NonMaxSuppression(
        op.Unsqueeze(sorted_boxes, [0]),
        op.Unsqueeze(per_class, [0]),
        op.Constant(value_ints=[_ALL]),
        op.Constant(value_floats=[threshold]),
        op.Constant(value_floats=[0.5]),
    )
    # Selected class by class: positions back in increasing order, detops' order.
    positions = _selected(selected)
    positions, _ = op.TopK(positions, op.Shape(positions), largest=0, sorted=1)
    if max_output is not None:
        positions = op.Slice(positions, [0], [max_output])
    return op.Gather(order, positions)


def _refuse(name: str, why: str):
    def translation(*args, **kwargs):
        raise ValueError(f"detops.onnx: {name} cannot be exported: {why}")

    return translation


soft_nms = _refuse(
    "soft_nms", "no standard ONNX operator decays scores (NonMaxSuppression discards boxes); run it outside the graph"
)
batched_soft_nms = _refuse(
    "batched_soft_nms",
    "no standard ONNX operator decays scores (NonMaxSuppression discards boxes); run it outside the graph",
)


def nms_per_image(boxes, scores, idxs, iou_threshold: float, max_output: Optional[int] = None):
    """Translation of ``detops::nms_per_image``: one batched_nms over the flattened batch,
    with one category per image (per (image, class) with ``idxs``), which suppresses within
    an image exactly as nms / batched_nms of that image does. Its kept boxes come in one
    global stable descending order; a stable sort by image (TopK keeps equal images in
    their order) gives each image its own order, and ``max_output`` keeps the first k of
    each image."""
    shape = op.Shape(scores)  # [B, N]
    # N, as a divisor: at least 1 (a batch of empty images has nothing to divide, but an
    # integer Div by zero fails even on empty input).
    per_image = op.Max(op.Slice(shape, [1], [2]), op.Constant(value_ints=[1]))
    total = op.ReduceProd(shape, keepdims=1)
    flat_boxes = op.Reshape(boxes, op.Concat(total, op.Constant(value_ints=[4]), axis=0))
    flat_scores = op.Reshape(scores, total)
    image = op.Div(op.Range(op.Constant(value_int=0), op.Squeeze(total), op.Constant(value_int=1)), per_image)
    if idxs is None:
        category = image
    else:
        classes = op.Cast(op.Reshape(idxs, total), to=INT64.dtype)
        pairs = op.Concat(op.Unsqueeze(image, [1]), op.Unsqueeze(classes, [1]), axis=1)
        _, _, category, _ = op.Unique(pairs, axis=0, sorted=1)
    kept = batched_nms(flat_boxes, flat_scores, op.Reshape(category, total), iou_threshold)
    kept_image = op.Div(kept, per_image)
    kept_image, by_image = op.TopK(kept_image, op.Shape(kept_image), largest=0, sorted=1)
    kept = op.Gather(kept, by_image)
    if max_output is not None:
        # Rank within the image: position minus the position of the image's first box.
        _, first, group, _ = op.Unique(kept_image, sorted=1)
        count = op.Squeeze(op.Shape(kept_image))
        rank = op.Sub(op.Range(op.Constant(value_int=0), count, op.Constant(value_int=1)), op.Gather(first, group))
        within = op.Less(rank, op.Constant(value_int=max_output))
        kept, kept_image = op.Compress(kept, within), op.Compress(kept_image, within)
    return op.Concat(op.Unsqueeze(kept_image, [1]), op.Unsqueeze(op.Mod(kept, per_image), [1]), axis=1)


# Rotated boxes: the standard operators' only box logic (NonMaxSuppression, RoiAlign) is
# axis-aligned, and the exact intersection is a data-dependent clipping loop in float64.
_ROTATED_WHY = "no standard ONNX operator intersects rotated boxes exactly; run it outside the graph"
box_iou_rotated = _refuse("box_iou_rotated", _ROTATED_WHY)
nms_rotated = _refuse("nms_rotated", _ROTATED_WHY)
batched_nms_rotated = _refuse("batched_nms_rotated", _ROTATED_WHY)


# Pairwise GIoU / DIoU / CIoU: torchvision's formulas as the same sequence of element-wise
# standard operators, broadcasting boxes1 [N, 1] against boxes2 [1, M]. torch.maximum /
# minimum propagate NaN and clamp(min=0) keeps it, which ONNX Max / Min / Clip do not
# promise, so those are written with Where. float16 / bfloat16 boxes compute in float32 (the
# result is float32, as detops'); generalized_box_iou rounds its coordinate differences to
# the boxes' dtype first, as torchvision does. Exact but for Atan (complete_box_iou), which
# ONNX Runtime may round differently in the last place.
def _is_narrow(boxes) -> bool:
    return boxes.dtype is not None and boxes.dtype.name in ("FLOAT16", "BFLOAT16")


def _coords(boxes, axis: int):
    """x1, y1, x2, y2 of boxes [K, 4] in the compute type, as [K, 1] (axis 1) or [1, K]."""
    t = op.Cast(boxes, to=FLOAT.dtype) if _is_narrow(boxes) else boxes
    return [op.Unsqueeze(op.Gather(t, op.Constant(value_int=k), axis=1), [axis]) for k in range(4)]


def _const(value: float, like):
    # A float64 constant cast to the compute type: eps rounds as torch rounds a Python float.
    return op.CastLike(op.Constant(value=onnx_ir.tensor(np.array(value, dtype=np.float64))), like)


def _nan_max(a, b):
    return op.Where(op.Or(op.Greater(a, b), op.IsNaN(a)), a, b)


def _nan_min(a, b):
    return op.Where(op.Or(op.Less(a, b), op.IsNaN(a)), a, b)


def _clamp0(x):
    zero = _const(0.0, x)
    return op.Where(op.Less(x, zero), zero, x)


def _pair_parts(boxes1, boxes2, narrow_to=None):
    """IoU, union, the enclosing box's clamped sides and the boxes' coordinates."""
    a, b = _coords(boxes1, 1), _coords(boxes2, 0)

    def diff(hi, lo):
        d = op.Sub(hi, lo)
        return d if narrow_to is None else op.Cast(op.Cast(d, to=narrow_to), to=FLOAT.dtype)

    area_a = op.Mul(op.Sub(a[2], a[0]), op.Sub(a[3], a[1]))
    area_b = op.Mul(op.Sub(b[2], b[0]), op.Sub(b[3], b[1]))
    ix = _clamp0(diff(_nan_min(a[2], b[2]), _nan_max(a[0], b[0])))
    iy = _clamp0(diff(_nan_min(a[3], b[3]), _nan_max(a[1], b[1])))
    inter = op.Mul(ix, iy)
    union = op.Sub(op.Add(area_a, area_b), inter)
    ex = _clamp0(diff(_nan_max(a[2], b[2]), _nan_min(a[0], b[0])))
    ey = _clamp0(diff(_nan_max(a[3], b[3]), _nan_min(a[1], b[1])))
    return op.Div(inter, union), union, ex, ey, a, b


def generalized_box_iou(boxes1, boxes2):
    """Translation of ``detops::generalized_box_iou``."""
    narrow_to = boxes1.dtype if _is_narrow(boxes1) else None
    iou, union, ex, ey, _, _ = _pair_parts(boxes1, boxes2, narrow_to)
    area_c = op.Mul(ex, ey)
    return op.Sub(iou, op.Div(op.Sub(area_c, union), area_c))


def _diou_iou(boxes1, boxes2, eps: float):
    iou, _, ex, ey, a, b = _pair_parts(boxes1, boxes2)
    diagonal = op.Add(op.Add(op.Mul(ex, ex), op.Mul(ey, ey)), _const(eps, ex))
    two = _const(2.0, ex)
    dx = op.Sub(op.Div(op.Add(a[0], a[2]), two), op.Div(op.Add(b[0], b[2]), two))
    dy = op.Sub(op.Div(op.Add(a[1], a[3]), two), op.Div(op.Add(b[1], b[3]), two))
    centres = op.Add(op.Mul(dx, dx), op.Mul(dy, dy))
    return op.Sub(iou, op.Div(centres, diagonal)), iou, a, b


def distance_box_iou(boxes1, boxes2, eps: float = 1e-7):
    """Translation of ``detops::distance_box_iou``."""
    diou, _, _, _ = _diou_iou(boxes1, boxes2, eps)
    return diou


def complete_box_iou(boxes1, boxes2, eps: float = 1e-7):
    """Translation of ``detops::complete_box_iou``."""
    diou, iou, a, b = _diou_iou(boxes1, boxes2, eps)
    angle_a = op.Atan(op.Div(op.Sub(a[2], a[0]), op.Sub(a[3], a[1])))
    angle_b = op.Atan(op.Div(op.Sub(b[2], b[0]), op.Sub(b[3], b[1])))
    d = op.Sub(angle_a, angle_b)
    v = op.Mul(_const(4 / math.pi**2, d), op.Mul(d, d))
    alpha = op.Div(v, op.Add(op.Add(op.Sub(_const(1.0, iou), iou), v), _const(eps, v)))
    return op.Sub(diou, op.Mul(alpha, v))


def translation_table() -> dict:
    """``{torch.ops.detops.<op>.default: onnxscript function}`` for this package's ops."""
    ops = torch.ops.detops
    return {
        ops.nms.default: nms,
        ops.batched_nms.default: batched_nms,
        ops.soft_nms.default: soft_nms,
        ops.batched_soft_nms.default: batched_soft_nms,
        ops.nms_per_image.default: nms_per_image,
        ops.box_iou_rotated.default: box_iou_rotated,
        ops.nms_rotated.default: nms_rotated,
        ops.batched_nms_rotated.default: batched_nms_rotated,
        ops.generalized_box_iou.default: generalized_box_iou,
        ops.distance_box_iou.default: distance_box_iou,
        ops.complete_box_iou.default: complete_box_iou,
    }
