"""ONNX export of the loss ops (needs onnx and onnxscript).

``torch.onnx.export(model, args, dynamo=True, custom_translation_table=translation_table())``
maps each op to standard operators.

``sigmoid_focal_loss``: the definition, term by term, in float32 (float64 for float64
inputs), with the native kernels' arrangement: ``Sigmoid(x)`` and ``Sigmoid(-x)`` for
``p`` and ``1 - p`` (no cancellation), the cross-entropy as ``(1 - t) * x +
Softplus(-x)`` (``-log_sigmoid(x)``), ``Mul(m, m)`` for gamma 2, ``Pow`` for other
non-zero gamma, the alpha weighting when alpha >= 0, then ``ReduceMean`` or ``ReduceSum``
over every axis for "mean" or "sum", and a ``CastLike`` back to the inputs' dtype. ONNX
Runtime matches eager to float32 rounding (its exp and log differ from detops' by an ulp or
so). alpha, gamma and reduction are fixed in the graph; shapes may be dynamic.
"""

from __future__ import annotations

import numpy as np
import torch
from onnxscript import ir
from onnxscript import opset18 as op
from onnxscript.onnx_types import DOUBLE, FLOAT

from . import box_iou_loss_onnx


def _compute_type(x):
    return DOUBLE.dtype if x.dtype is not None and x.dtype.name == "DOUBLE" else FLOAT.dtype


def _scalar(value: float, like):
    # A constant of `like`'s type holding `value` rounded once to it (a float32 Constant
    # cast to float64 would carry float32's rounding of alpha or gamma).
    return op.CastLike(op.Constant(value=ir.tensor(np.array(value, dtype=np.float64))), like)


def _softplus(z, double: bool):
    if not double:
        return op.Softplus(z)
    zero = op.CastLike(op.Constant(value_float=0.0), z)
    one = op.CastLike(op.Constant(value_float=1.0), z)
    return op.Add(op.Max(z, zero), op.Log(op.Add(one, op.Exp(op.Neg(op.Abs(z))))))


def sigmoid_focal_loss(inputs, targets, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none"):
    """Translation of ``detops::sigmoid_focal_loss``."""
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(
            f"detops.onnx: sigmoid_focal_loss: reduction must be 'none', 'mean' or 'sum', got {reduction!r}"
        )
    t_type = _compute_type(inputs)
    x = op.Cast(inputs, to=t_type)
    t = op.Cast(targets, to=t_type)
    one = _scalar(1.0, x)
    neg_x = op.Neg(x)
    s = op.Sigmoid(x)
    sn = op.Sigmoid(neg_x)
    not_t = op.Sub(one, t)
    ce = op.Add(op.Mul(not_t, x), _softplus(neg_x, t_type == DOUBLE.dtype))
    m = op.Add(op.Mul(t, sn), op.Mul(not_t, s))
    if gamma == 0:
        loss = ce
    elif gamma == 2:
        loss = op.Mul(ce, op.Mul(m, m))
    else:
        loss = op.Mul(ce, op.Pow(m, _scalar(gamma, x)))
    if alpha >= 0:
        a = op.Add(op.Mul(_scalar(alpha, x), t), op.Mul(_scalar(1.0 - alpha, x), not_t))
        loss = op.Mul(a, loss)
    if reduction == "mean":
        loss = op.ReduceMean(loss, keepdims=0)
    elif reduction == "sum":
        loss = op.ReduceSum(loss, keepdims=0)
    return op.CastLike(loss, inputs)


def translation_table() -> dict:
    """``{torch.ops.detops.<op>.default: onnxscript function}`` for this package's ops."""
    return {
        torch.ops.detops.sigmoid_focal_loss.default: sigmoid_focal_loss,
        **box_iou_loss_onnx.translation_table(),
    }
