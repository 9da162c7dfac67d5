"""ONNX export of ``multi_scale_deformable_attention`` (needs onnx and onnxscript).

``torch.onnx.export(model, args, dynamo=True, custom_translation_table=translation_table())``
maps it to standard operators: per level a ``Slice`` of value (bounds computed in the graph
from ``value_spatial_shapes``, so level sizes, queries and values may all be dynamic; only
the number of levels is fixed), ``Transpose``/``Reshape`` to ``[B * H, D, h, w]``, and
``GridSample`` (opset 16+, bilinear, zero padding, ``align_corners=0``) at ``2 * loc - 1``;
then the samples of all levels are weighted and summed. This is the op's definition, so
ONNX Runtime matches eager to float rounding (GridSample forms pixel coordinates as
``((2 * loc - 1 + 1) * w - 1) / 2`` where detops forms ``loc * w - 0.5``, and sums in
another order). float16/bfloat16 are computed in float32 and rounded back, as in detops.
``value_level_start_index`` is not used by the graph (detops checks it in eager mode).
NaN or infinite locations: ONNX Runtime's GridSample decides (detops samples zero).
"""

from __future__ import annotations

import torch
from onnxscript import opset18 as op
from onnxscript.onnx_types import DOUBLE, FLOAT, INT64


def _levels(shapes) -> int:
    levels = shapes.shape[0]
    if not isinstance(levels, int):
        raise ValueError(
            "detops.onnx: multi_scale_deformable_attention needs a static number of levels "
            f"(value_spatial_shapes.shape[0]), got {levels}"
        )
    return levels


def _const(values):
    return op.Constant(value_ints=list(values))


def multi_scale_deformable_attention(
    value, value_spatial_shapes, sampling_locations, attention_weights, value_level_start_index=None
):
    """Translation of ``detops::multi_scale_deformable_attention``."""
    levels = _levels(value_spatial_shapes)
    t = DOUBLE.dtype if value.dtype is not None and value.dtype.name == "DOUBLE" else FLOAT.dtype
    v = op.Cast(value, to=t)
    loc = op.Cast(sampling_locations, to=t)
    attn = op.Cast(attention_weights, to=t)
    shapes = op.Cast(value_spatial_shapes, to=INT64.dtype)
    sizes = op.ReduceProd(shapes, _const([1]), keepdims=0)  # [L]: h * w
    ends = op.CumSum(sizes, _const([0]))
    starts = op.Sub(ends, sizes)
    batch = op.Shape(v, start=0, end=1)
    head_dim = op.Shape(v, start=3, end=4)
    queries = op.Shape(loc, start=1, end=2)
    points = op.Shape(loc, start=4, end=5)
    samples = []
    for level in range(levels):
        at = _const([level])
        # [B, h * w, H, D] -> [B, H, D, h * w] -> [B * H, D, h, w]
        part = op.Slice(v, op.Gather(starts, at), op.Gather(ends, at), _const([1]))
        part = op.Transpose(part, perm=[0, 2, 3, 1])
        hw = op.Reshape(op.Gather(shapes, at, axis=0), _const([2]))
        part = op.Reshape(part, op.Concat(_const([-1]), head_dim, hw, axis=0))
        # [B, Q, H, P, 2] -> [B, H, Q, P, 2] -> [B * H, Q, P, 2], in [-1, 1]
        grid = op.Squeeze(op.Gather(loc, at, axis=3), _const([3]))
        grid = op.Transpose(grid, perm=[0, 2, 1, 3, 4])
        grid = op.Reshape(grid, op.Concat(_const([-1]), queries, points, _const([2]), axis=0))
        grid = op.Sub(
            op.Mul(grid, op.CastLike(op.Constant(value_float=2.0), grid)),
            op.CastLike(op.Constant(value_float=1.0), grid),
        )
        samples.append(op.GridSample(part, grid, align_corners=0, mode="bilinear", padding_mode="zeros"))
    stacked = op.Concat(*samples, axis=3)  # [B * H, D, Q, L * P]
    # [B, Q, H, L, P] -> [B, H, Q, L, P] -> [B * H, 1, Q, L * P]
    weights = op.Transpose(attn, perm=[0, 2, 1, 3, 4])
    weights = op.Reshape(weights, op.Concat(_const([-1, 1]), queries, op.Mul(points, _const([levels])), axis=0))
    out = op.ReduceSum(op.Mul(stacked, weights), _const([3]), keepdims=0)  # [B * H, D, Q]
    out = op.Reshape(out, op.Concat(batch, _const([-1]), queries, axis=0))  # [B, H * D, Q]
    out = op.Transpose(out, perm=[0, 2, 1])
    return op.CastLike(out, value)


def translation_table() -> dict:
    """``{torch.ops.detops.<op>.default: onnxscript function}`` for this package's ops."""
    return {torch.ops.detops.multi_scale_deformable_attention.default: multi_scale_deformable_attention}
