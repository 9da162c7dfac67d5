"""ONNX export of ``deform_conv2d`` (needs onnx and onnxscript).

``torch.onnx.export(model, args, dynamo=True, custom_translation_table=translation_table())``
maps it to the standard ``DeformConv`` operator (opset 19), with and without mask, with
groups and offset groups. The offset layout is the same as ONNX's: for offset group g and
kernel tap k, channels ``2 * (g * kh * kw + k)`` and ``+ 1`` hold the (dy, dx) shift.
ONNX Runtime matches eager to float32 rounding (it sums in another order). Group counts are
read from the channel sizes, which must be static at export (they are for any model with
fixed layers); otherwise the export raises ``ValueError``. float16/bfloat16 are computed in
float32 and rounded back, as in detops. Offsets that are NaN or infinite sample zero in
detops; ONNX Runtime's behaviour on them is its own.
"""

from __future__ import annotations

import torch
from onnxscript import opset19 as op
from onnxscript.onnx_types import DOUBLE, FLOAT


def _static(value, what: str) -> int:
    if not isinstance(value, int):
        raise ValueError(f"detops.onnx: deform_conv2d needs a static {what} for ONNX DeformConv, got {value}")
    return value


def deform_conv2d(input, offset, weight, bias, mask, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    """Translation of ``detops::deform_conv2d``."""
    in_channels = _static(input.shape[1], "input channel count")
    per_group = _static(weight.shape[1], "weight.shape[1]")
    kh, kw = _static(weight.shape[2], "kernel height"), _static(weight.shape[3], "kernel width")
    offset_groups = _static(offset.shape[1], "offset channel count") // (2 * kh * kw)
    t = DOUBLE.dtype if input.dtype is not None and input.dtype.name == "DOUBLE" else FLOAT.dtype
    out = op.DeformConv(
        op.Cast(input, to=t),
        op.Cast(weight, to=t),
        op.Cast(offset, to=t),
        None if bias is None else op.Cast(bias, to=t),
        None if mask is None else op.Cast(mask, to=t),
        dilations=[dilation_h, dilation_w],
        group=in_channels // per_group,
        kernel_shape=[kh, kw],
        offset_group=offset_groups,
        pads=[pad_h, pad_w, pad_h, pad_w],
        strides=[stride_h, stride_w],
    )
    return op.CastLike(out, input)


def translation_table() -> dict:
    """``{torch.ops.detops.<op>.default: onnxscript function}`` for this package's ops."""
    return {torch.ops.detops.deform_conv2d.default: deform_conv2d}
