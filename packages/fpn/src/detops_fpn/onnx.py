"""ONNX export of ``fpn_upsample_add`` (needs onnx and onnxscript), the fused top-down step
of FeaturePyramidNetwork.

``torch.onnx.export(model, args, dynamo=True, custom_translation_table=translation_table())``
maps it to two ``Gather`` ops and an ``Add``: the nearest source index of every output row
and column is computed in the graph exactly as the kernels and ``F.interpolate`` compute it
(``min(floor(dst * float32(in / out)), in - 1)``), so the result is bitwise eager's. This is
used instead of ``Resize``, which divides by the output/input ratio and can round the other
way. float16/bfloat16 are added in float32 and rounded back, as in detops. The FPN's
convolutions and extra blocks export through PyTorch's own translations.
"""

from __future__ import annotations

import torch
from onnxscript import opset18 as op
from onnxscript.onnx_types import DOUBLE, FLOAT, INT64


def _sources(in_size, out_size):
    """Nearest source index of each of `out_size` positions along an axis of `in_size`."""
    scale = op.Div(op.Cast(in_size, to=FLOAT.dtype), op.Cast(out_size, to=FLOAT.dtype))
    dst = op.Cast(op.Range(op.Constant(value_int=0), out_size, op.Constant(value_int=1)), to=FLOAT.dtype)
    src = op.Cast(op.Floor(op.Mul(dst, scale)), to=INT64.dtype)
    return op.Min(src, op.Sub(in_size, op.Constant(value_int=1)))


def fpn_upsample_add(top, lateral):
    """Translation of ``detops::fpn_upsample_add``."""
    t = DOUBLE.dtype if top.dtype is not None and top.dtype.name == "DOUBLE" else FLOAT.dtype
    top_shape, out_shape = op.Shape(top), op.Shape(lateral)
    dim = [op.Constant(value_int=i) for i in (2, 3)]
    rows = _sources(op.Gather(top_shape, dim[0]), op.Gather(out_shape, dim[0]))
    cols = _sources(op.Gather(top_shape, dim[1]), op.Gather(out_shape, dim[1]))
    up = op.Gather(op.Gather(op.Cast(top, to=t), rows, axis=2), cols, axis=3)
    return op.CastLike(op.Add(op.Cast(lateral, to=t), up), lateral)


def translation_table() -> dict:
    """``{torch.ops.detops.<op>.default: onnxscript function}`` for this package's ops
    (MultiScaleRoIAlign's multi-level op is in ``detops_roi.onnx``)."""
    return {torch.ops.detops.fpn_upsample_add.default: fpn_upsample_add}
