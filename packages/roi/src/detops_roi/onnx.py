"""ONNX export of the RoI ops (needs onnx and onnxscript).

``torch.onnx.export(model, args, dynamo=True, custom_translation_table=translation_table())``
maps them to standard operators with detops' semantics; ONNX Runtime then matches eager to
float32 rounding (the summation order differs):

- ``roi_align`` → ``RoiAlign`` (opset 16+): ``half_pixel`` for ``aligned=True``,
  ``output_half_pixel`` (boxes at least 1x1) otherwise; ``sampling_ratio <= 0`` is the
  adaptive grid (ONNX's 0).
- ``multi_level_roi_align`` → one ``RoiAlign`` per level over all RoIs, then each RoI's row
  taken from its level (``GatherElements``); level -1 gives a zero row.
- ``ps_roi_align`` → ``RoiAlign`` (``half_pixel``) over all channels, then bin (i, j) of
  output channel c taken from input channel ``(c * ph + i) * pw + j`` (``GatherElements``).
- ``roi_pool`` → ``MaxRoiPool``. Its second output (argmax, which only the backward uses)
  has no ONNX equivalent and is exported as -1 everywhere; the public ``roi_pool`` and
  ``RoIPool`` never return it. ONNX Runtime rounds scaled coordinates to 32-bit integers,
  so boxes beyond +-2^31 pixels after ``spatial_scale`` differ (detops clamps at +-2^40).
- ``ps_roi_pool`` → the bin sums from a float64 summed-area table of the map (exact to
  float32 rounding), with detops' integer bin bounds computed in float64.

Boxes with a NaN or infinite coordinate give zero rows, as in detops. float16/bfloat16 are
computed in float32 and rounded back, as in detops. Batch indices must be valid (detops
raises on CPU; ONNX Runtime's behaviour on an invalid index is its own). RoiAlign in ONNX
Runtime visits every sample of an adaptive grid, so a finite but enormous box (say 1e30
pixels) costs it time in proportion; detops visits only samples that touch the map.
"""

from __future__ import annotations

import torch
from onnxscript import opset18 as op
from onnxscript.onnx_types import BOOL, DOUBLE, FLOAT, INT64


def _compute_type(x):
    # The dtype to compute in: float32 for narrow floats, as the detops kernels do.
    return DOUBLE.dtype if x.dtype is not None and x.dtype.name == "DOUBLE" else FLOAT.dtype


def _columns(rois, start, end):
    return op.Slice(rois, [start], [end], [1])


def _batch_indices(rois):
    return op.Cast(op.Squeeze(_columns(rois, 0, 1), [1]), to=INT64.dtype)


def _non_finite_rows(boxes):
    """[K] bool: the box has a NaN or infinite coordinate."""
    bad = op.Cast(op.Or(op.IsNaN(boxes), op.IsInf(boxes)), to=INT64.dtype)
    return op.Cast(op.ReduceMax(bad, [1], keepdims=0), to=BOOL.dtype)


def _roi_align_all(x, t, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    """RoiAlign of every RoI over every channel of x (already in the compute type).

    A box with a NaN or infinite coordinate has no valid sample in detops (a zero row),
    and neither has an inverted box (x2 < x1 or y2 < y1) with aligned=True and adaptive
    sampling (its grid is empty). ONNX Runtime's RoiAlign fails or loops on those (its grid
    size overflows), so they get a harmless box and their rows are zeroed afterwards."""
    boxes = op.Cast(_columns(rois, 1, 5), to=t)
    inert = _non_finite_rows(boxes)
    if aligned and sampling_ratio <= 0:
        x1, y1, x2, y2 = (op.Gather(boxes, op.Constant(value_int=i), axis=1) for i in range(4))
        inert = op.Or(inert, op.Or(op.Less(x2, x1), op.Less(y2, y1)))
    boxes = op.Where(op.Unsqueeze(inert, [1]), op.CastLike(op.Constant(value_float=0.0), boxes), boxes)
    out = op.RoiAlign(
        x,
        boxes,
        _batch_indices(rois),
        coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel",
        mode="avg",
        output_height=pooled_height,
        output_width=pooled_width,
        sampling_ratio=max(int(sampling_ratio), 0),
        spatial_scale=float(spatial_scale),
    )
    return op.Where(op.Unsqueeze(inert, [1, 2, 3]), op.CastLike(op.Constant(value_float=0.0), out), out)


def roi_align(
    input, rois, spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int, aligned: bool
):
    """Translation of ``detops::roi_align``."""
    t = _compute_type(input)
    out = _roi_align_all(
        op.Cast(input, to=t), t, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned
    )
    return op.CastLike(out, input)


def multi_level_roi_align(
    features, spatial_scales, rois, levels, pooled_height: int, pooled_width: int, sampling_ratio: int, aligned: bool
):
    """Translation of ``detops::multi_level_roi_align``."""
    first = features[0]
    t = _compute_type(first)
    per_level = [
        _roi_align_all(op.Cast(f, to=t), t, rois, s, pooled_height, pooled_width, sampling_ratio, aligned)
        for f, s in zip(features, spatial_scales)
    ]
    stacked = op.Concat(*[op.Unsqueeze(p, [0]) for p in per_level], axis=0)  # [L, K, C, ph, pw]
    # Level -1 ("no level") reads an extra all-zero level.
    zeros = op.Expand(op.CastLike(op.Constant(value_float=0.0), per_level[0]), op.Shape(per_level[0]))
    stacked = op.Concat(stacked, op.Unsqueeze(zeros, [0]), axis=0)
    level = op.Where(op.Less(levels, op.Constant(value_int=0)), op.Constant(value_int=len(features)), levels)
    one = op.Constant(value_ints=[1])
    index = op.Expand(op.Unsqueeze(level, [0, 2, 3, 4]), op.Concat(one, op.Shape(stacked, start=1), axis=0))
    picked = op.Squeeze(op.GatherElements(stacked, index, axis=0), [0])
    return op.CastLike(picked, first)


def ps_roi_align(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int):
    """Translation of ``detops::ps_roi_align``."""
    t = _compute_type(input)
    every = _roi_align_all(
        op.Cast(input, to=t), t, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, True
    )
    return op.CastLike(_position_sensitive(every, pooled_height, pooled_width), input)


def _position_sensitive(every, pooled_height: int, pooled_width: int):
    """[K, C_out * ph * pw, ph, pw] -> [K, C_out, ph, pw]: bin (i, j) of channel c from
    channel (c * ph + i) * pw + j."""
    bins = pooled_height * pooled_width
    shape = op.Shape(every)
    c_out = op.Div(op.Gather(shape, op.Constant(value_ints=[1])), op.Constant(value_ints=[bins]))
    square = op.Constant(value_ints=[bins, bins])
    grouped = op.Reshape(every, op.Concat(op.Shape(every, end=1), c_out, square, axis=0))  # [K, C_out, group, bin]
    diagonal = op.Constant(value_ints=list(range(bins)))
    one = op.Constant(value_ints=[1])
    index = op.Expand(op.Reshape(diagonal, [1, 1, bins, 1]), op.Concat(op.Shape(grouped, end=3), one, axis=0))
    picked = op.GatherElements(grouped, index, axis=3)  # [K, C_out, bins, 1]
    size = op.Constant(value_ints=[pooled_height, pooled_width])
    return op.Reshape(picked, op.Concat(op.Shape(grouped, end=2), size, axis=0))


def roi_pool(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int):
    """Translation of ``detops::roi_pool``: (output, argmax placeholder)."""
    x = op.Cast(input, to=FLOAT.dtype)
    rois = op.Cast(rois, to=FLOAT.dtype)
    # A box with a non-finite coordinate has only empty bins in detops (zeros); MaxRoiPool
    # would cast its rounded coordinates to integers. It gets a harmless box, then zeros.
    boxes = _columns(rois, 1, 5)
    inert = _non_finite_rows(boxes)
    boxes = op.Where(op.Unsqueeze(inert, [1]), op.Constant(value_float=0.0), boxes)
    rois = op.Concat(_columns(rois, 0, 1), boxes, axis=1)
    out = op.MaxRoiPool(x, rois, pooled_shape=[pooled_height, pooled_width], spatial_scale=float(spatial_scale))
    out = op.Where(op.Unsqueeze(inert, [1, 2, 3]), op.Constant(value_float=0.0), out)
    argmax = op.ConstantOfShape(op.Shape(out), value=_int32_minus_one())
    return op.CastLike(out, input), argmax


def _int32_minus_one():
    import onnx

    return onnx.helper.make_tensor("minus_one", onnx.TensorProto.INT32, [1], [-1])


def _double(v: float):
    # Constant has no float64 attribute; the values used here are exact in float32.
    return op.Cast(op.Constant(value_float=v), to=DOUBLE.dtype)


def _round_away(v):
    # std::round (half away from zero) in float64, exact below 2^52; ONNX Round is half-to-even.
    return op.Mul(op.Sign(v), op.Floor(op.Add(op.Abs(v), _double(0.5))))


def _pool_bounds(start, extent, bins: int, limit, t):
    """detops' integer bins along one axis: [lo, hi) per RoI and bin, clamped to [0, limit]."""
    size = op.Cast(op.Max(extent, op.Constant(value_int=1)), to=t)
    step = op.Div(size, op.CastLike(op.Constant(value_float=float(bins)), size))  # [K]
    p = op.CastLike(op.Range(op.Constant(value_int=0), op.Constant(value_int=bins), op.Constant(value_int=1)), size)
    one = op.CastLike(op.Constant(value_float=1.0), size)
    lo = op.Cast(op.Floor(op.Mul(op.Unsqueeze(p, [0]), op.Unsqueeze(step, [1]))), to=INT64.dtype)
    hi = op.Cast(op.Ceil(op.Mul(op.Unsqueeze(op.Add(p, one), [0]), op.Unsqueeze(step, [1]))), to=INT64.dtype)
    zero = op.Constant(value_int=0)
    lo = op.Min(op.Max(op.Add(lo, op.Unsqueeze(start, [1])), zero), limit)
    hi = op.Min(op.Max(op.Add(hi, op.Unsqueeze(start, [1])), zero), limit)
    return lo, hi  # [K, bins]


def ps_roi_pool(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int):
    """Translation of ``detops::ps_roi_pool``: bin sums from a float64 summed-area table,
    bins exactly as detops computes them (including the clamp to size - 1)."""
    t = _compute_type(input)
    shape = op.Shape(input)
    height, width = op.Gather(shape, op.Constant(value_int=2)), op.Gather(shape, op.Constant(value_int=3))
    channels = op.Gather(shape, op.Constant(value_int=1))
    table = op.CumSum(op.CumSum(op.Cast(input, to=DOUBLE.dtype), op.Constant(value_int=2)), op.Constant(value_int=3))
    table = op.Pad(table, op.Constant(value_ints=[0, 0, 1, 1, 0, 0, 0, 0]))  # zero first row and column
    flat = op.Reshape(table, op.Constant(value_ints=[-1]))

    boxes = op.Mul(
        op.Cast(_columns(rois, 1, 5), to=t), op.CastLike(op.Constant(value_float=spatial_scale), op.Cast(input, to=t))
    )
    valid = op.Not(_non_finite_rows(boxes))  # [K]
    wide = op.Where(op.Unsqueeze(valid, [1]), op.Cast(boxes, to=DOUBLE.dtype), _double(0.0))
    limit = _double(1099511627776.0)  # detops clamps pooling coordinates to +-2^40
    corners = op.Cast(op.Min(op.Max(_round_away(wide), op.Neg(limit)), limit), to=INT64.dtype)  # [K, 4]
    x1, y1, x2, y2 = (op.Gather(corners, op.Constant(value_int=i), axis=1) for i in range(4))
    one = op.Constant(value_int=1)
    h_lo, h_hi = _pool_bounds(y1, op.Sub(y2, y1), pooled_height, op.Sub(height, one), t)
    w_lo, w_hi = _pool_bounds(x1, op.Sub(x2, x1), pooled_width, op.Sub(width, one), t)

    # Flat table index of (image, channel, row, column), broadcast to [K, C_out, ph, pw].
    bins = pooled_height * pooled_width
    c_out = op.Div(channels, op.Constant(value_int=bins))
    group = op.Reshape(op.Range(op.Constant(value_int=0), c_out, one), [1, -1, 1, 1])
    within = op.Reshape(op.Constant(value_ints=list(range(bins))), [1, 1, pooled_height, pooled_width])
    channel = op.Add(op.Mul(group, op.Constant(value_int=bins)), within)
    image = op.Unsqueeze(_batch_indices(rois), [1, 2, 3])
    rows, cols = op.Add(height, one), op.Add(width, one)
    plane = op.Mul(op.Add(op.Mul(image, channels), channel), op.Mul(rows, cols))

    def at(h, w):
        index = op.Add(plane, op.Add(op.Mul(op.Unsqueeze(h, [1, 3]), cols), op.Unsqueeze(w, [1, 2])))
        return op.Gather(flat, index)

    total = op.Add(op.Sub(op.Sub(at(h_hi, w_hi), at(h_lo, w_hi)), at(h_hi, w_lo)), at(h_lo, w_lo))
    rows_in = op.Unsqueeze(op.Sub(h_hi, h_lo), [1, 3])
    cols_in = op.Unsqueeze(op.Sub(w_hi, w_lo), [1, 2])
    area = op.Mul(rows_in, cols_in)
    empty = op.Or(
        op.Or(op.LessOrEqual(rows_in, op.Constant(value_int=0)), op.LessOrEqual(cols_in, op.Constant(value_int=0))),
        op.Not(op.Unsqueeze(valid, [1, 2, 3])),
    )
    mean = op.Div(op.Cast(total, to=t), op.Cast(op.Max(area, one), to=t))
    out = op.Where(empty, op.CastLike(op.Constant(value_float=0.0), mean), mean)
    return op.CastLike(out, input)


def roi_align_rotated(*args, **kwargs):
    # RoiAlign is axis-aligned; GridSample's borders (zero padding weighted in) are not
    # roi_align's (clamped taps from -1 to 0, nothing beyond): no exact composition.
    raise ValueError(
        "detops.onnx: roi_align_rotated cannot be exported: no standard ONNX operator samples "
        "rotated boxes with roi_align's borders exactly; run it outside the graph"
    )


def translation_table() -> dict:
    """``{torch.ops.detops.<op>.default: onnxscript function}`` for this package's ops."""
    ops = torch.ops.detops
    return {
        ops.roi_align.default: roi_align,
        ops.multi_level_roi_align.default: multi_level_roi_align,
        ops.ps_roi_align.default: ps_roi_align,
        ops.roi_pool.default: roi_pool,
        ops.ps_roi_pool.default: ps_roi_pool,
        ops.roi_align_rotated.default: roi_align_rotated,
    }
