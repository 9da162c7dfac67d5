"""Fuzzing every op and module detops exports with extreme inputs (issue 8: never crash,
never hang).

For each target Hypothesis draws calls with NaN / infinite / huge / negative coordinates
and sizes, empty dimensions, non-contiguous, channels_last and stride-0 tensors, wrong and
mixed dtypes, meta tensors next to CPU ones, huge output sizes, zero / negative / huge
strides, paddings, dilations, groups, sampling ratios and spatial scales, and
fractional / out-of-range batch indices. Every call must, within a time limit:

- raise one of the documented exception kinds, whose message names an argument the
  example made invalid; or
- return what torchvision 0.29.1 returns, on inputs torchvision is known to handle safely
  (compared where torchvision's answer is finite); or, beyond those, the documented
  defined result (shape, dtype, zeros for non-finite boxes and empty maps, finite
  values for finite input).

CI runs a fixed, derandomized set of examples per target; ``--long`` runs random ones
for an hour (see docs/development.md, "Fuzzing"). The machinery lives in fuzz_support.py.
"""

from __future__ import annotations

import math

import fuzz_strategies as fs
import fuzz_support as fz
import pytest
import torch
import torch.nn.functional as F
from fuzz_strategies import MODULES, Call, conv_pair
from fuzz_support import TOO_LARGE, Expect, T, guarded
from hypothesis import example, given, note

import detops
import detops_fpn
import detops_roi
from detops_core.testing import torchvision_ops

# The oracle is the torchvision detops follows, 0.29: older ones (compat-2.11 has 0.26)
# differ in places (box formats), and then only the documented results are checked.
tv = torchvision_ops(min_version=(0, 29))

# ----------------------------------------------------------------------------- helpers


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int64(v) -> bool:
    return _is_int(v) and -(2**63) <= v < 2**63


def _pair_of(value):
    """(h, w) as torch.nn.modules.utils._pair reads an output_size, or None if it cannot."""
    if isinstance(value, (list, tuple)):
        return (value[0], value[1]) if len(value) >= 2 else None
    return (value, value)


def _check_results_on_meta(label: str, result) -> None:
    for t in fz.tensors_in(result):
        assert t.device.type == "meta", f"{label} got a meta tensor but returned a tensor on {t.device}"


def _backward(label: str, out: torch.Tensor, inputs: list[torch.Tensor]):
    """Gradients of sum(out * g) for a fixed g, under the same time limit."""
    inputs = [t for t in inputs if t is not None and t.requires_grad]
    if not inputs or not out.requires_grad:
        return None
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape).to(out.dtype)
    res = guarded(label + ".backward", torch.autograd.grad, out, inputs, grad_out, allow_unused=True)
    grads = fz.check_outcome(res, [])
    for t, g in zip(inputs, grads):
        if g is not None:
            assert g.shape == t.shape and g.dtype == t.dtype, f"{label}: gradient {g.shape}/{g.dtype} for {t.shape}"
    return grads


def _cpu_meta_mix(*tensors) -> str | None:
    devices = {t.device.type for t in tensors if isinstance(t, torch.Tensor)}
    return "meta" if "meta" in devices else None


def _run_checked(label: str, e: Expect, fn, *args, **kwargs):
    """Call fn guarded; check the error contract; return the result (None if it raised)."""
    before = fz.snapshot((args, kwargs))
    out = guarded(label, fn, *args, **kwargs)
    result = fz.check_outcome(out, e.must, e.may, e.kind)
    fz.check_unchanged(label, before, fz.tensors_in((args, kwargs)))
    return result


def _meta_expect(e: Expect, *values) -> bool:
    """With a meta tensor in the call the fake kernels run: they see no data (no value
    checks) and check less than the kernels, so any fault may go unnoticed or be reported
    as another; the call must still raise a documented kind or return meta tensors."""
    if not any(fz.any_meta(v) for v in values):
        return False
    e.must.clear()
    e.maybe(".")
    return True


# ----------------------------------------------------------------------------- NMS


def _stable_rank(scores: torch.Tensor) -> torch.Tensor:
    # Descending, NaN first, ties in input order: the order detops (and torchvision's CPU
    # kernel) visits boxes in.
    return torch.sort(scores, descending=True, stable=True).indices


def _nms_oracle(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    # torchvision decides the suppression; its visiting order is fixed by ranks so that
    # ties are not left to an unstable sort.
    order = _stable_rank(scores)
    ranks = torch.arange(order.numel(), 0, -1, dtype=boxes.dtype)
    keep = tv.nms(boxes[order].contiguous(), ranks, float(threshold))
    return order[keep]


def check_nms(call: Call):
    kw = fz.build(call.kw)
    boxes, scores = kw["boxes"], kw["scores"]
    idxs = kw.get("idxs")
    thr = kw["iou_threshold"]
    e = Expect()
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        e.fault("boxes")
    if scores.dim() != 1 or (boxes.dim() >= 1 and scores.shape[0] != boxes.shape[0]):
        e.fault("scores")
    if not boxes.is_floating_point():
        e.fault("boxes")
    if boxes.dtype != scores.dtype:
        e.fault("dtype|scores")
    if not isinstance(thr, (int, float)) or isinstance(thr, bool):
        e.fault("iou_threshold")
    if idxs is not None:
        if idxs.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            e.fault("idxs")
        if idxs.dim() != 1 or (boxes.dim() >= 1 and idxs.shape[0] != boxes.shape[0]):
            e.fault("idxs")
    meta = _meta_expect(e, kw)
    fn = detops.batched_nms if idxs is not None else detops.nms
    args = (boxes, scores, idxs, thr) if idxs is not None else (boxes, scores, thr)
    keep = _run_checked(repr(call), e, fn, *args)
    if keep is None:
        return
    if meta:
        _check_results_on_meta(repr(call), keep)
        return
    assert keep.dtype == torch.int64 and keep.dim() == 1, f"{call}: returned {keep.dtype} {list(keep.shape)}"
    n = boxes.shape[0]
    assert keep.numel() <= n and (keep.numel() == 0 or (0 <= int(keep.min()) and int(keep.max()) < n))
    assert keep.unique().numel() == keep.numel(), f"{call}: an index kept twice"
    if tv is None:
        return
    b, s = boxes, scores
    if b.dtype in (torch.float16, torch.bfloat16):
        b, s = b.float(), s.float()
    if idxs is None:
        expected = _nms_oracle(b, s, thr)
    else:
        parts = []
        for c in torch.unique(idxs):
            members = torch.nonzero(idxs == c).flatten()
            parts.append(members[_nms_oracle(b[members], s[members], thr)])
        kept = torch.sort(torch.cat(parts)).values if parts else torch.zeros(0, dtype=torch.int64)
        expected = kept[_stable_rank(s[kept])]
    assert torch.equal(keep, expected), f"{call}: kept {keep.tolist()}, torchvision keeps {expected.tolist()}"


@given(call=fs.nms_calls(batched=False))
def _fuzz_nms(call):
    note(repr(call))
    check_nms(call)


@given(call=fs.nms_calls(batched=True))
def _fuzz_batched_nms(call):
    note(repr(call))
    check_nms(call)


# ----------------------------------------------------------------------------- box utilities

ROTATED = ("xywhr", "cxcywhr", "xyxyxyxy")


def check_box_util(call: Call):
    """Plain PyTorch in both libraries: torchvision is the oracle on every input, except
    box_iou and box_area in the rotated formats: box_iou refuses them (NotImplementedError;
    box_iou_rotated is the op), box_area computes them where torchvision refuses (its values
    are checked in detops-nms' test_rotated.py; here only that it fails cleanly)."""
    kw = fz.build(call.kw)
    label = repr(call)
    e = Expect()
    fmts = [v for k, v in kw.items() if "fmt" in k]
    ref = None
    unknown = [f for f in fmts if f not in ("xyxy", "xywh", "cxcywh") + ROTATED]
    rotated = [f for f in fmts if f in ROTATED]
    if unknown:
        e.fault("fmt|format")
        e.kind = ValueError
    elif rotated and call.name == "box_iou":
        e.fault("rotated")
        e.kind = NotImplementedError
    elif rotated and call.name == "box_area":
        e.maybe("box_area")
    elif tv is None:
        e.maybe(".")
    else:
        ref = guarded("torchvision." + label, getattr(tv, call.name), **kw, timed=False)
        if ref.raised:
            # Same torch operations, same failure (shape, dtype): any message will do.
            e.fault(".")
    result = _run_checked(label, e, getattr(detops, call.name), **kw)
    if result is None or ref is None:
        return
    expected = ref.result
    assert isinstance(result, torch.Tensor) and result.shape == expected.shape and result.dtype == expected.dtype, (
        f"{label}: {result.dtype} {list(result.shape)}, torchvision {expected.dtype} {list(expected.shape)}"
    )
    assert result.device == expected.device, f"{label}: on {result.device}, torchvision on {expected.device}"
    if result.device.type == "meta":
        return
    if result.dtype.is_floating_point:
        fz.assert_close_where_finite(label, result, expected, fz.tolerance(result.dtype), 0.0)
    else:
        assert torch.equal(result, expected), f"{label}: {result.tolist()} vs torchvision {expected.tolist()}"


def _box_util_test(name):
    @given(call=fs.box_util_calls(name))
    def run(call):
        note(repr(call))
        check_box_util(call)

    return run


# ----------------------------------------------------------------------------- RoI ops

ROI_OPS = ("roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool")


def _roi_args(call: Call, kw: dict):
    """(input, boxes, params) of a RoI call, function or module form."""
    params = dict(call.ctor) if call.ctor is not None else {k: v for k, v in kw.items() if k not in ("input", "boxes")}
    boxes = kw["rois"] if call.ctor is not None else kw["boxes"]
    return kw["input"], boxes, params


def _rois_of(boxes, e: Expect, x: torch.Tensor):
    """The Tensor[K, 5] the op will see (None when boxes is malformed), noting faults."""
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            e.fault("boxes|rois")
            return None
        return boxes
    parts = []
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.shape[1] != 4:
            e.fault(rf"boxes\[{i}\]")
            return None
        parts.append(torch.cat([torch.full_like(b[:, :1], float(i)), b], dim=1))
    if not parts:
        return torch.zeros(0, 5, dtype=x.dtype, device=x.device)
    return torch.cat(parts)


def param_faults(params: dict, e: Expect):
    """Faults of the RoI ops' scalar arguments; returns the (height, width) of the output
    size when it is valid."""
    pair = _pair_of(params["output_size"])
    if pair is None or not all(_int64(v) for v in pair):
        e.fault("pooled|output_size")
        pair = None
    elif pair[0] < 1 or pair[1] < 1:
        e.fault("output_size")
        pair = None
    elif pair[0] * pair[1] >= 2**63:
        e.fault("output_size")
    scale = params["spatial_scale"]
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        e.fault("spatial_scale")
    if "sampling_ratio" in params:
        sr = params["sampling_ratio"]
        if not _int64(sr) or sr > 1024:
            e.fault("sampling_ratio")
    return pair


def roi_expectation(op: str, x: torch.Tensor, rois, params: dict, e: Expect):
    """Faults of a RoI call and the output shape it must have (None if unknown)."""
    ps = op.startswith("ps_")
    if x.dim() != 4:
        e.fault("input")
    if not x.is_floating_point():
        e.fault("input")
    if rois is not None and rois.dtype != x.dtype:
        e.fault("dtype|rois")
    pair = param_faults(params, e)
    if x.dim() != 4 or pair is None:
        return None
    n, c = x.shape[0], x.shape[1]
    ph, pw = pair
    c_out = c
    if ps:
        if c % (ph * pw) != 0:
            e.fault("output_size|channels")
            return None
        c_out = c // (ph * pw)
    k = rois.shape[0] if rois is not None else 0
    if rois is not None and rois.device.type != "meta" and rois.is_floating_point():
        for i in range(k):
            v = float(rois[i, 0])
            if not (math.isfinite(v) and v == math.floor(v) and 0 <= v < n):
                e.fault(rf"rois\[{i}, 0\]|batch index")
                break
    # Outputs of 2^36 bytes or more cannot be allocated here: such a size must be refused.
    if k * c_out * ph * pw * x.element_size() >= 2**36:
        e.fault("output_size|" + TOO_LARGE)
    elif c_out * ph * pw >= 2**40 or ph * pw >= 2**40:
        e.maybe("output_size|" + TOO_LARGE)
    return (k, c_out, ph, pw)


def _tv_roi_safe(op: str, x: torch.Tensor, rois: torch.Tensor, params: dict) -> list[int]:
    """Rows torchvision computes safely and quickly: finite moderate boxes on a non-empty
    map, small output, bounded adaptive sampling grid."""
    if tv is None or x.shape[2] == 0 or x.shape[3] == 0:
        return []
    scale = float(params["spatial_scale"])
    ph, pw = _pair_of(params["output_size"])
    if not (math.isfinite(scale) and abs(scale) <= 16 and ph <= 8 and pw <= 8):
        return []
    if params.get("sampling_ratio", 0) > 8:
        return []
    limit = 64.0 if op.endswith("align") else 1e4
    coords = rois[:, 1:].to(torch.float64)
    ok = torch.isfinite(coords).all(dim=1) & ((coords * scale).abs() <= limit).all(dim=1)
    if params.get("aligned") and params["sampling_ratio"] <= 0:
        # torchvision sizes a vector by the (negative) adaptive grid of an aligned box of
        # negative width or height and raises.
        ok &= ((coords[:, 2:] - coords[:, :2]) * scale >= 0).all(dim=1)
    return [int(i) for i in torch.nonzero(ok).flatten()]


def _roi_oracle(op: str, x: torch.Tensor, rois: torch.Tensor, params: dict) -> torch.Tensor:
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    xs, rs = x.detach().to(dtype), rois.detach().to(dtype)
    fn = getattr(tv, op)
    size = _pair_of(params["output_size"])
    if op == "roi_align":
        args = (size, float(params["spatial_scale"]), params["sampling_ratio"], params["aligned"])
    elif op == "ps_roi_align":
        args = (size, float(params["spatial_scale"]), params["sampling_ratio"])
    else:
        args = (size, float(params["spatial_scale"]))
    out = guarded("torchvision." + op, fn, xs, rs, *args, timed=False)
    assert not out.raised, f"torchvision.{op} raised {fz.describe(out.error)} on an input it handles"
    return out.result.to(x.dtype)


def _zero_rows(op: str, rois: torch.Tensor, params: dict, dtype: torch.dtype) -> torch.Tensor:
    """Rows whose result is documented as 0 whatever the map holds.

    Pooling ops: a non-finite (scaled) coordinate. Align ops: a box whose start or extent
    is not finite on either axis, computed as torchvision computes them (in float32 unless
    float64): then every sample is NaN or infinite, outside the map. roi_align's legacy
    mode first raises the extent to at least 1, so an end at -inf is an ordinary box."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    scale = torch.tensor(float(params["spatial_scale"]), dtype=compute)
    c = rois[:, 1:].detach().to(compute) * scale
    if not op.endswith("align"):
        return ~torch.isfinite(c).all(dim=1)
    aligned = op == "ps_roi_align" or params.get("aligned", False)
    c = c - (0.5 if aligned else 0.0)
    start, extent = c[:, :2], c[:, 2:] - c[:, :2]
    if op == "roi_align" and not params.get("aligned", False):
        extent = torch.where(extent.isnan(), extent, extent.clamp(min=1.0))
    return ~(torch.isfinite(start) & torch.isfinite(extent)).all(dim=1)


def check_roi_result(label, op, x, rois, params, out, shape):
    """The documented result of a RoI call that returned."""
    assert isinstance(out, torch.Tensor), f"{label} returned {type(out)}"
    if _cpu_meta_mix(x, rois) == "meta":
        _check_results_on_meta(label, out)
        if shape is not None:
            assert tuple(out.shape) == shape, f"{label}: shape {list(out.shape)}, expected {list(shape)}"
        return
    assert tuple(out.shape) == shape, f"{label}: shape {list(out.shape)}, expected {list(shape)}"
    assert out.dtype == x.dtype and out.device == x.device, f"{label}: {out.dtype} on {out.device}"
    if out.numel() == 0:
        return
    zero_rows = _zero_rows(op, rois, params, x.dtype)
    if x.shape[2] == 0 or x.shape[3] == 0:
        zero_rows[:] = True
    o = out.detach()
    if bool(zero_rows.any()):
        z = o[zero_rows]
        assert bool((z == 0).all()), (
            f"{label}: rows {torch.nonzero(zero_rows).flatten().tolist()} must be 0 (non-finite box or scale, no map)"
        )
    if fz.all_finite(x) and fz.finite_magnitude(x) <= 1e30:
        assert fz.all_finite(o), f"{label}: non-finite output for finite input"
    safe = [i for i in _tv_roi_safe(op, x, rois, params) if not bool(zero_rows[i])]
    if safe:
        expected = _roi_oracle(op, x, rois[safe], params)
        fz.assert_close_where_finite(
            label + " vs torchvision", o[safe], expected, fz.tolerance(x.dtype), fz.finite_magnitude(x)
        )


def check_roi(call: Call):
    op = call.extra["op"]
    kw = fz.build(call.kw)
    x, boxes, params = _roi_args(call, kw)
    label = repr(call)
    e = Expect()
    rois = _rois_of(boxes, e, x)
    shape = roi_expectation(op, x, rois, params, e)
    _meta_expect(e, kw)
    if call.ctor is not None:
        ctor = guarded(label + " (constructor)", getattr(detops, MODULES[op]), **params)
        module = fz.check_outcome(ctor, [])
        out = _run_checked(label, e, module, x, boxes)
    else:
        out = _run_checked(label, e, getattr(detops, op), **kw)
    if out is None:
        return
    check_roi_result(label, op, x, rois, params, out, shape)
    if x.requires_grad and out.device.type != "meta":
        grads = _backward(label, out, [x])
        if grads and grads[0] is not None:
            assert fz.all_finite(grads[0]), f"{label}: non-finite gradient"


def _roi_test(op, module):
    @given(call=fs.roi_calls(op, module))
    def run(call):
        note(repr(call))
        check_roi(call)

    return run


# ----------------------------------------------------------------------------- multi-level RoIAlign


def check_multi_level(call: Call):
    kw = fz.build(call.kw)
    feats, rois, levels = kw["features"], kw["rois"], kw["levels"]
    label = repr(call)
    e = Expect()
    if not feats:
        e.fault("features")
    if len(kw["spatial_scales"]) != len(feats):
        e.fault("spatial_scales")
    shape = None
    for i, f in enumerate(feats):
        if f.dim() != 4 or not f.is_floating_point():
            e.fault(rf"features\[{i}\]|input|features")
        elif f.shape[:2] != feats[0].shape[:2] or f.dtype != feats[0].dtype:
            e.fault(r"features\[\d+\]|features")
    if levels.is_floating_point():
        e.fault("levels")
    if levels.dim() != 1 or levels.shape[0] != rois.shape[0]:
        e.fault("levels")
    params = {k: kw[k] for k in ("output_size", "sampling_ratio", "aligned")}
    params["spatial_scale"] = 1.0
    param_faults(params, e)
    if feats:
        shape = roi_expectation("roi_align", feats[0], rois, params, e)
    level_values = None
    if levels.device.type != "meta" and not levels.is_floating_point() and levels.dim() == 1:
        level_values = levels.to(torch.int64).tolist()
        for i, lv in enumerate(level_values):
            # -1 is "no level" (documented): a zero row.
            if not -1 <= lv < len(feats):
                e.fault(rf"levels\[{i}\]")
                break
    meta = _meta_expect(e, kw)
    out = _run_checked(label, e, detops_roi.multi_level_roi_align, **kw)
    if out is None:
        return
    if meta:
        _check_results_on_meta(label, out)
        return
    assert tuple(out.shape) == shape and out.dtype == feats[0].dtype, f"{label}: {out.dtype} {list(out.shape)}"
    if out.numel() == 0:
        # Nothing to compare; and rows of an empty tensor with huge dimensions cannot even
        # be sliced (torch's storage offset overflows).
        return
    # Documented: row k equals roi_align of RoI k on its own level, or is 0 for level -1.
    for k, lv in enumerate(level_values):
        if lv == -1:
            assert bool((out[k].detach() == 0).all()), f"{label}: row {k} of level -1 must be 0"
            continue
        one = guarded(
            f"detops.roi_align (row {k} of {label})",
            detops.roi_align,
            feats[lv],
            rois[k : k + 1],
            kw["output_size"],
            kw["spatial_scales"][lv],
            kw["sampling_ratio"],
            kw["aligned"],
        )
        expected = fz.check_outcome(one, [])
        assert torch.equal(out[k : k + 1].detach().nan_to_num(123.0), expected.detach().nan_to_num(123.0)), (
            f"{label}: row {k} differs from roi_align on level {lv}"
        )
    if any(f.requires_grad for f in feats):
        _backward(label, out, feats)


@given(call=fs.multi_level_calls())
def _fuzz_multi_level(call):
    note(repr(call))
    check_multi_level(call)


# ----------------------------------------------------------------------------- MultiScaleRoIAlign


def _multiscale_tv_safe(kw, ctor, feats, boxes) -> bool:
    if tv is None or not feats or not kw["image_shapes"] or not boxes:
        return False
    if any(f.dtype not in (torch.float32, torch.float64) or f.shape[2] == 0 or f.shape[3] == 0 for f in feats):
        return False
    if any(not (1 <= s <= 4096) for shape in kw["image_shapes"] for s in shape):
        return False
    size = _pair_of(ctor["output_size"])
    if not all(_is_int(v) and 1 <= v <= 8 for v in size) or ctor["sampling_ratio"] > 8:
        return False
    if len(boxes) > feats[0].shape[0] and any(b.shape[0] for b in boxes[feats[0].shape[0] :]):
        return False
    max_h = max(s[0] for s in kw["image_shapes"])
    max_scale = max(f.shape[2] / max_h for f in feats) * 2
    coords = torch.cat([b.detach().to(torch.float64).reshape(-1) for b in boxes])
    return bool(torch.isfinite(coords).all()) and bool(((coords * max_scale).abs() <= 64).all())


def check_multiscale(call: Call):
    kw = fz.build(call.kw)
    ctor = call.ctor
    label = repr(call)
    made = guarded(label + " (constructor)", detops.MultiScaleRoIAlign, **ctor)
    module = fz.check_outcome(made, [])
    feats = [v for k, v in kw["x"].items() if k in ctor["featmap_names"]]
    boxes = kw["boxes"]
    e = Expect()
    if not feats:
        e.fault("featmap|feature")
    if not kw["image_shapes"]:
        e.fault("image")
    elif max(max(s[0] for s in kw["image_shapes"]), 0) == 0:
        e.fault("image")
    if any(f.shape[2] == 0 for f in feats):
        e.fault("feature|featmap|height|empty")
    if not boxes:
        # No image at all: an empty result (torchvision's torch.cat raises).
        e.maybe("boxes|non-empty list")
    shape = None
    if feats:
        parts = [torch.cat([torch.full_like(b[:, :1], float(i)), b], dim=1) for i, b in enumerate(boxes)]
        rois = torch.cat(parts) if parts else feats[0].new_zeros((0, 5))
        params = {"output_size": ctor["output_size"], "spatial_scale": 1.0, "sampling_ratio": ctor["sampling_ratio"]}
        shape = roi_expectation("roi_align", feats[0], rois, params, e)
        for f in feats:
            if f.shape[:2] != feats[0].shape[:2]:
                e.fault(r"features\[\d+\]")
    meta = _meta_expect(e, kw)
    tv_safe = not e.must and not meta and _multiscale_tv_safe(kw, ctor, feats, boxes)
    out = _run_checked(label, e, module, **kw)
    if out is None:
        return
    if meta:
        _check_results_on_meta(label, out)
        return
    assert tuple(out.shape) == shape and out.dtype == feats[0].dtype, f"{label}: {out.dtype} {list(out.shape)}"
    if not boxes or out.numel() == 0:
        return
    rows = torch.cat([b.detach().to(torch.float64) for b in boxes])
    area = (rows[:, 2] - rows[:, 0]) * (rows[:, 3] - rows[:, 1])
    # Whatever the level's (finite, positive) scale: a NaN coordinate, an infinite start or
    # an end at +inf leave no finite sample (an end at -inf is raised to a 1-pixel extent).
    zero = rows.isnan().any(dim=1) | rows[:, :2].isinf().any(dim=1) | (rows[:, 2:] == math.inf).any(dim=1)
    if len(feats) > 1:
        # Several levels: the level of a box of negative or NaN area is no level at all in
        # torchvision, and its row stays 0.
        zero |= (area < 0) | area.isnan()
    if bool(zero.any()):
        assert bool((out.detach()[zero] == 0).all()), (
            f"{label}: rows {torch.nonzero(zero).flatten().tolist()} must be 0"
        )
    if fz.all_finite(*feats) and fz.finite_magnitude(*feats) <= 1e30:
        assert fz.all_finite(out), f"{label}: non-finite output for finite input"
    if tv_safe:
        theirs = tv.MultiScaleRoIAlign(**ctor)
        ref = guarded(
            "torchvision." + label,
            theirs,
            {k: v.detach() for k, v in kw["x"].items()},
            [b.detach() for b in boxes],
            kw["image_shapes"],
            timed=False,
        )
        assert not ref.raised, f"torchvision raised {fz.describe(ref.error)}"
        fz.assert_close_where_finite(
            label + " vs torchvision", out, ref.result, fz.tolerance(out.dtype), fz.finite_magnitude(*feats)
        )
    if any(f.requires_grad for f in feats):
        _backward(label, out, feats)


@given(call=fs.multiscale_calls())
def _fuzz_multiscale(call):
    note(repr(call))
    check_multiscale(call)


# ----------------------------------------------------------------------------- deformable convolution


def deform_expectation(kw: dict, e: Expect):
    x, offset, weight, mask, bias = (kw[k] for k in ("input", "offset", "weight", "mask", "bias"))
    pairs = {}
    for name in ("stride", "padding", "dilation"):
        pair = conv_pair(kw[name])
        if pair is None or not all(_int64(v) for v in pair):
            e.fault(name)
        pairs[name] = pair
    s, p, d = pairs["stride"], pairs["padding"], pairs["dilation"]
    if s and min(s) <= 0:
        e.fault("stride")
    if p and min(p) < 0:
        e.fault("padding")
    if d and min(d) <= 0:
        e.fault("dilation")
    for name, t in (("input", x), ("offset", offset), ("weight", weight)):
        if t.dim() != 4:
            e.fault(name)
    if not x.is_floating_point():
        e.fault("input")
    for name, t in (("offset", offset), ("weight", weight), ("mask", mask), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            e.fault(f"dtype|{name}")
    # Later faults are still collected after these: the kernels report whichever they
    # check first, which has to be one of them.
    if None in (s, p, d) or min(s) <= 0 or min(d) <= 0 or min(p) < 0:
        return None
    if x.dim() != 4 or offset.dim() != 4 or weight.dim() != 4:
        return None
    b, cin, h, w = x.shape
    cout, cpg, kh, kw = weight.shape
    if kh == 0 or kw == 0:
        e.fault("kernel|weight")
        return None
    if cin == 0:
        e.fault("channel|input")
        return None
    if cpg == 0 or cin % cpg:
        e.fault("weight|groups|channels")
        return None
    groups = cin // cpg
    if cout % groups:
        e.fault("out_channels|groups")
    taps = kh * kw
    if offset.shape[1] == 0 or offset.shape[1] % (2 * taps):
        e.fault("offset")
        return None
    og = offset.shape[1] // (2 * taps)
    if cin % og:
        e.fault("offset_groups|offset")
    lim = 2**63 - 1
    spans = [d[i] * ((kh, kw)[i] - 1) + 1 for i in range(2)]
    padded = [(h, w)[i] + 2 * p[i] for i in range(2)]
    if (
        max(spans + padded) > lim
        or max(d[i] * ((kh, kw)[i] - 1) for i in range(2)) > lim
        or max(2 * v for v in p) > lim
    ):
        # Naming padding or dilation is not enough: sizes wrapped around int64 also give a
        # message with them ("smaller than the dilated kernel"); it has to say too large.
        e.fault(r"(?=.*(padding|dilation))(?=.*(2\^63|overflow|too large|larger than))")
        return None
    if padded[0] < spans[0] or padded[1] < spans[1]:
        e.fault("kernel|smaller")
        return None
    oh, ow = (padded[0] - spans[0]) // s[0] + 1, (padded[1] - spans[1]) // s[1] + 1
    if offset.shape[0] != b or tuple(offset.shape[2:]) != (oh, ow):
        e.fault("offset")
    if mask is not None and (mask.dim() != 4 or tuple(mask.shape) != (b, og * taps, oh, ow)):
        e.fault("mask")
    if bias is not None and tuple(bias.shape) != (cout,):
        e.fault("bias")
    return (b, cout, oh, ow)


def _tv_deform_safe(kw: dict, shape) -> bool:
    x, weight = kw["input"], kw["weight"]
    if tv is None or min(x.shape[1:]) == 0 or math.prod(shape) > 200_000:
        return False
    # torchvision sizes the output in int32: padding or dilation whose arithmetic leaves that
    # range makes it raise ("computed output dims: (-2147483647, ...)") where detops, in
    # int64, computes the defined result; no oracle there.
    stride, pad, dil = (conv_pair(kw[k]) for k in ("stride", "padding", "dilation"))
    for axis in (0, 1):
        extent = dil[axis] * (weight.shape[2 + axis] - 1) + 1
        if max(x.shape[2 + axis] + 2 * pad[axis], extent, stride[axis]) >= 2**31:
            return False
    return True


def check_deform_outcome(label: str, kw: dict, out, shape):
    x, offset, weight, mask, bias = (kw[k] for k in ("input", "offset", "weight", "mask", "bias"))
    if _cpu_meta_mix(x, offset, weight, mask, bias) == "meta":
        _check_results_on_meta(label, out)
        return
    assert tuple(out.shape) == shape and out.dtype == x.dtype, (
        f"{label}: {out.dtype} {list(out.shape)}, expected {shape}"
    )
    values = (x, weight, mask, bias)
    magnitude = fz.finite_magnitude(x) * fz.finite_magnitude(weight) * max(1.0, fz.finite_magnitude(mask))
    magnitude = magnitude * weight.shape[1] * weight.shape[2] * weight.shape[3] + fz.finite_magnitude(bias)
    if fz.all_finite(*values) and magnitude <= 1e30:
        assert fz.all_finite(out), f"{label}: non-finite output for finite input, weight, mask and bias"
    if _tv_deform_safe(kw, shape) and out.numel():
        # A NaN or infinite offset samples zero, like an offset that leaves the map: give
        # torchvision (which reads out of bounds for NaN) a far-away offset instead.
        far = torch.where(
            torch.isfinite(offset) & (offset.abs() < 1e6), offset.detach(), torch.full_like(offset, -60000.0)
        )
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        args = [t.detach().to(dtype) if t is not None else None for t in (x, far, weight, bias)]
        ref = guarded(
            "torchvision." + label,
            tv.deform_conv2d,
            *args,
            stride=conv_pair(kw["stride"]),
            padding=conv_pair(kw["padding"]),
            dilation=conv_pair(kw["dilation"]),
            mask=mask.detach().to(dtype) if mask is not None else None,
            timed=False,
        )
        assert not ref.raised, f"torchvision raised {fz.describe(ref.error)}"
        fz.assert_close_where_finite(
            label + " vs torchvision", out, ref.result.to(x.dtype), fz.tolerance(x.dtype), magnitude
        )
    grads = _backward(label, out, [x, offset, weight, mask, bias])
    # NaN and infinite offsets have zero gradients: only the other values matter.
    if grads is not None and fz.all_finite(*values) and magnitude <= 1e20:
        assert all(g is None or fz.all_finite(g) for g in grads), f"{label}: non-finite gradient"


def check_deform(call: Call):
    kw = fz.build(call.kw)
    label = repr(call)
    e = Expect()
    shape = deform_expectation(kw, e)
    _meta_expect(e, kw)
    out = _run_checked(label, e, detops.deform_conv2d, **kw)
    if out is not None:
        check_deform_outcome(label, kw, out, shape)


@given(call=fs.deform_calls())
def _fuzz_deform_conv2d(call):
    note(repr(call))
    check_deform(call)


def check_deform_module(call: Call):
    label = repr(call)
    ctor = call.ctor
    e = Expect()
    cin, cout, groups = ctor["in_channels"], ctor["out_channels"], ctor["groups"]
    k = conv_pair(ctor["kernel_size"])
    if groups <= 0:
        e.fault("groups")
    elif cin % groups:
        e.fault("in_channels|groups")
    elif cout % groups:
        e.fault("out_channels|groups")
    if cin <= 0:
        e.fault("in_channels")
    if cout < 0:
        e.fault("out_channels")
    if k is None or min(k) <= 0:
        e.fault("kernel_size")
    for name in ("stride", "padding", "dilation"):
        if conv_pair(ctor[name]) is None:
            e.fault(name)
    if not e.must and k is not None and cout * max(cin // groups, 1) * k[0] * k[1] * 4 >= 2**36:
        e.fault(TOO_LARGE)
    made = guarded(label + " (constructor)", detops.DeformConv2d, **ctor)
    module = fz.check_outcome(made, e.must, e.may)
    if module is None:
        return
    kw = fz.build(call.kw)
    full = {
        **kw,
        "weight": module.weight,
        "bias": module.bias,
        "stride": module.stride,
        "padding": module.padding,
        "dilation": module.dilation,
    }
    fe = Expect()
    shape = deform_expectation(full, fe)
    _meta_expect(fe, kw)
    out = _run_checked(label, fe, module, **kw)
    if out is not None:
        check_deform_outcome(label, full, out, shape)


@given(call=fs.deform_module_calls())
def _fuzz_deform_module(call):
    note(repr(call))
    check_deform_module(call)


# ----------------------------------------------------------------------------- FPN


def check_upsample(call: Call):
    kw = fz.build(call.kw)
    top, lateral = kw["top"], kw["lateral"]
    label = repr(call)
    e = Expect()
    common = torch.promote_types(top.dtype, lateral.dtype)
    if top.dim() != 4 or lateral.dim() != 4:
        e.fault("top|lateral")
    elif top.shape[:2] != lateral.shape[:2]:
        e.fault("top and lateral|batch|channels")
    elif not common.is_floating_point:
        e.fault("top|lateral")
    elif (
        top.shape[0] * top.shape[1] > 0 and lateral.shape[2] * lateral.shape[3] > 0 and top.shape[2] * top.shape[3] == 0
    ):
        e.fault("top")
    meta = _meta_expect(e, kw)
    out = _run_checked(label, e, detops_fpn.fpn_upsample_add, **kw)
    if out is None:
        return
    if meta:
        _check_results_on_meta(label, out)
        return
    assert out.shape == lateral.shape and out.dtype == common, f"{label}: {out.dtype} {list(out.shape)}"
    if out.numel() == 0:
        return
    t = top.detach().to(common).requires_grad_()
    lat = lateral.detach().to(common).requires_grad_()
    expected = lat + F.interpolate(t, size=lateral.shape[-2:], mode="nearest")
    assert torch.equal(out.detach().nan_to_num(7.0), expected.detach().nan_to_num(7.0)), (
        f"{label}: differs from interpolate + add"
    )
    inputs = [v for v in (top, lateral) if v.requires_grad]
    if inputs:
        grads = _backward(label, out, [top, lateral])
        g = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape).to(out.dtype)
        ref = torch.autograd.grad(expected, [t, lat], g)
        for ours, theirs, src in zip(grads, ref, (top, lateral)):
            if ours is not None and src.requires_grad:
                fz.assert_close_where_finite(
                    label + " gradient", ours, theirs.to(ours.dtype), fz.tolerance(ours.dtype), 1.0
                )


@given(call=fs.upsample_calls())
def _fuzz_upsample_add(call):
    note(repr(call))
    check_upsample(call)


def _make_fpn(lib, ctor):
    """The FPN of library ``lib`` (detops or torchvision.ops) for a drawn constructor."""
    fpn_mod = lib.feature_pyramid_network
    extra = {
        "none": lambda: None,
        "maxpool": lambda: fpn_mod.LastLevelMaxPool(),
        "p6p7": lambda: fpn_mod.LastLevelP6P7(*ctor["extra_args"]),
        "p6p7_same": lambda: fpn_mod.LastLevelP6P7(ctor["out_channels"], ctor["out_channels"]),
        "base": lambda: fpn_mod.ExtraFPNBlock(),
        "bad": lambda: torch.nn.ReLU(),
    }[ctor["extra_blocks"]]()
    norm = getattr(torch.nn, ctor["norm_layer"]) if ctor["norm_layer"] else None
    module = lib.FeaturePyramidNetwork(
        ctor["in_channels_list"], ctor["out_channels"], extra_blocks=extra, norm_layer=norm
    )
    return module.eval()


def check_fpn(call: Call):
    """FeaturePyramidNetwork is torch's convolutions around detops' fused top-down op:
    the oracle is torchvision's FPN with the same parameters, on every input (both are
    plain PyTorch apart from that op)."""
    label = repr(call)
    ctor = call.ctor
    made = guarded(label + " (constructor)", _make_fpn, detops, ctor)
    ref_made = guarded("torchvision " + label + " (constructor)", _make_fpn, tv, ctor, timed=False) if tv else None
    e = Expect()
    if ref_made is not None and ref_made.raised:
        e.fault(".")
    elif ref_made is None:
        e.maybe(".")
    module = fz.check_outcome(made, e.must, e.may)
    if module is None:
        return
    kw = fz.build(call.kw)
    label_fwd = label
    fe = Expect()
    ref = None
    if ref_made is not None:
        theirs = ref_made.result
        theirs.load_state_dict(module.state_dict())
        ref = guarded("torchvision." + label, theirs, {k: v.detach() for k, v in kw["x"].items()}, timed=False)
        if ref.raised:
            fe.maybe(".")
    else:
        fe.maybe(".")
    out = _run_checked(label_fwd, fe, module, **kw)
    if out is None or ref is None:
        return
    if ref.raised:
        return
    assert list(out.keys()) == list(ref.result.keys()), f"{label}: keys {list(out)} vs {list(ref.result)}"
    magnitude = fz.finite_magnitude(*kw["x"].values())
    for key in out:
        ours, theirs = out[key], ref.result[key]
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype and ours.device == theirs.device, (
            f"{label}[{key}]: {ours.dtype} {list(ours.shape)} on {ours.device} vs {theirs.dtype} {list(theirs.shape)}"
        )
        if ours.device.type != "meta":
            fz.assert_close_where_finite(
                f"{label}[{key}]", ours, theirs, max(fz.tolerance(ours.dtype), 1e-4), magnitude
            )
    feats = [v for v in kw["x"].values() if v.requires_grad]
    if feats and all(v.device.type == "cpu" for v in out.values()):
        total = sum(v.to(torch.float64).sum() for v in out.values())
        _backward(label, total, feats)


@given(call=fs.fpn_calls())
def _fuzz_fpn(call):
    note(repr(call))
    check_fpn(call)


# ----------------------------------------------------------------------------- seeds


def _seeds() -> dict[str, list[Call]]:
    """Known-bad inputs, run first in every run of their target: the random search finds
    their kinds, these pin the exact cases (the five bugs issue 8 started from, then what
    this fuzzer found)."""
    x = T((1, 4, 8, 8), "float32", seed=1)
    box = T((1, 5), "float32", values=(0.0, 1, 1, 5, 5))

    def roi(op, boxes, **params):
        defaults = {"output_size": 2, "spatial_scale": 1.0, "sampling_ratio": -1, "aligned": False}
        names = (
            ["output_size", "spatial_scale"]
            + ["sampling_ratio"] * op.endswith("align")
            + ["aligned"] * (op == "roi_align")
        )
        kw = {"input": x, "boxes": boxes, **{k: params.get(k, defaults[k]) for k in names}}
        return Call("detops." + op, kw, extra={"op": op})

    seeds: dict[str, list[Call]] = {op: [] for op in ROI_OPS}
    for op in ROI_OPS:
        # A CPU map with meta rois (the fake kernel used to return an uninitialised CPU
        # tensor), and an output size that is not a pair.
        seeds[op] += [
            roi(op, T((1, 5), "float32", values=(0.0, 1, 1, 5, 5), device="meta")),
            roi(op, box, output_size=(7,)),
        ]
    for op in ("ps_roi_align", "ps_roi_pool"):
        # Bin counts that overflow int64 (to 0: a division by zero).
        seeds[op] += [roi(op, box, output_size=size) for size in ((2**32, 2**32), (2**62, 4))]
    for op in ("roi_align", "ps_roi_align"):
        # A finite start and an infinite width (float32 overflow, or an infinite end): the
        # widest adaptive sampling grid.
        for v in ((0.0, -3e38, 1.0, 3e38, 5.0), (0.0, 1.0, 1.0, math.inf, 5.0)):
            seeds[op].append(roi(op, T((4, 5), "float32", values=v * 4), sampling_ratio=0))
    for op in ROI_OPS:
        # The same through the modules.
        for call in list(seeds[op]):
            kw = dict(call.kw)
            x_, boxes = kw.pop("input"), kw.pop("boxes")
            module = Call("detops." + MODULES[op], {"input": x_, "rois": boxes}, ctor=kw, extra={"op": op})
            seeds.setdefault(MODULES[op], []).append(module)
    levels = T((1,), "int64", values=(0,))
    feats = [x, T((1, 4, 4, 4), "float32", seed=2)]
    seeds["multi_level_roi_align"] = [
        Call(
            "detops_roi.multi_level_roi_align",
            {
                "features": feats,
                "rois": T((1, 5), "float32", values=(0.0, 1.0, 1.0, math.inf, 5.0)),
                "levels": levels,
                "output_size": 2,
                "spatial_scales": [1.0, 0.5],
                "sampling_ratio": 0,
                "aligned": False,
            },
        ),
        Call(
            "detops_roi.multi_level_roi_align",
            {
                "features": feats,
                "rois": T((1, 5), "float32", values=(0.0, 1, 1, 5, 5)),
                "levels": T((1,), "int64", values=(0,), device="meta"),
                "output_size": 2,
                "spatial_scales": [1.0, 0.5],
                "sampling_ratio": 0,
                "aligned": False,
            },
        ),
    ]
    ms = {
        "featmap_names": ["0", "1"],
        "output_size": 2,
        "sampling_ratio": 0,
        "canonical_scale": 224,
        "canonical_level": 4,
    }
    pyramid = {"0": T((1, 4, 16, 16), "float32", seed=3), "1": T((1, 4, 8, 8), "float32", seed=4)}
    seeds["MultiScaleRoIAlign"] = [
        # A box of negative area, and one of infinite width.
        Call(
            "detops.MultiScaleRoIAlign",
            {
                "x": pyramid,
                "boxes": [T((2, 4), "float32", values=(50.0, 10, 40, 30, 1, 1, 20, 20))],
                "image_shapes": [(64, 64)],
            },
            ctor=ms,
        ),
        Call(
            "detops.MultiScaleRoIAlign",
            {"x": pyramid, "boxes": [T((1, 4), "float32", values=(-3e38, 1.0, 3e38, 5.0))], "image_shapes": [(64, 64)]},
            ctor=ms,
        ),
        # Maps that do not shrink level after level: torchvision maps the box to no level.
        Call(
            "detops.MultiScaleRoIAlign",
            {
                "x": {"0": T((1, 1, 1, 16), "float32", seed=5), "1": T((1, 1, 8, 8), "float32", seed=6)},
                "boxes": [T((1, 4), "float32", values=(0.0, 0.0, 8.0, 8.0))],
                "image_shapes": [(32, 32)],
            },
            ctor=ms,
        ),
        # An empty map, and an empty image: the scale of a level cannot be inferred.
        Call(
            "detops.MultiScaleRoIAlign",
            {
                "x": {"0": T((1, 4, 0, 8), "float32", seed=7), "1": T((1, 4, 4, 4), "float32", seed=8)},
                "boxes": [T((1, 4), "float32", values=(1.0, 1, 5, 5))],
                "image_shapes": [(32, 32)],
            },
            ctor=ms,
        ),
        Call(
            "detops.MultiScaleRoIAlign",
            {"x": pyramid, "boxes": [T((1, 4), "float32", values=(1.0, 1, 5, 5))], "image_shapes": [(0, 0)]},
            ctor=ms,
        ),
    ]
    dc = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "mask": None}
    seeds["deform_conv2d"] = [
        # No input channel (with a weight that has one).
        Call(
            "detops.deform_conv2d",
            {
                "input": T((1, 0, 5, 5), "float32", seed=9),
                "offset": T((1, 18, 3, 3), "float32", seed=10),
                "weight": T((2, 1, 3, 3), "float32", seed=11),
                **dc,
            },
        ),
        # Padding and dilation whose sizes overflow int64.
        Call(
            "detops.deform_conv2d",
            {
                "input": T((1, 2, 5, 5), "float32", seed=12),
                "offset": T((1, 18, 3, 3), "float32", seed=13),
                "weight": T((2, 2, 3, 3), "float32", seed=14),
                **{**dc, "dilation": 2**62},
            },
        ),
        Call(
            "detops.deform_conv2d",
            {
                "input": T((1, 2, 5, 5), "float32", seed=12),
                "offset": T((1, 18, 3, 3), "float32", seed=13),
                "weight": T((2, 2, 3, 3), "float32", seed=14),
                **{**dc, "padding": 2**62},
            },
        ),
        # Stride 0 on meta tensors (the fake kernel divides by it).
        Call(
            "detops.deform_conv2d",
            {
                "input": T((1, 2, 5, 5), "float32", device="meta"),
                "offset": T((1, 18, 3, 3), "float32", device="meta"),
                "weight": T((2, 2, 3, 3), "float32", device="meta"),
                **{**dc, "stride": 0},
            },
        ),
    ]
    module = {
        "in_channels": 2,
        "out_channels": 2,
        "kernel_size": 3,
        "stride": 1,
        "padding": 0,
        "dilation": 1,
        "bias": True,
    }
    seeds["DeformConv2d"] = [
        Call(
            "detops.DeformConv2d",
            {
                "input": T((1, 2, 5, 5), "float32", seed=15),
                "offset": T((1, 18, 3, 3), "float32", seed=16),
                "mask": None,
            },
            ctor={**module, "groups": groups, "kernel_size": k},
        )
        for groups, k in ((0, 3), (1, 0))
    ]
    return seeds


SEEDS = _seeds()


def _with_seeds(name: str, test):
    for call in reversed(SEEDS.get(name, [])):
        test = example(call=call)(test)
    return test


# ----------------------------------------------------------------------------- tests

TARGETS = {
    "nms": _fuzz_nms,
    "batched_nms": _fuzz_batched_nms,
    **{
        name: _box_util_test(name)
        for name in ("box_area", "box_iou", "box_convert", "clip_boxes_to_image", "remove_small_boxes")
    },
    **{op: _roi_test(op, False) for op in ROI_OPS},
    **{MODULES[op]: _roi_test(op, True) for op in ROI_OPS},
    "multi_level_roi_align": _fuzz_multi_level,
    "MultiScaleRoIAlign": _fuzz_multiscale,
    "deform_conv2d": _fuzz_deform_conv2d,
    "DeformConv2d": _fuzz_deform_module,
    "fpn_upsample_add": _fuzz_upsample_add,
    "FeaturePyramidNetwork": _fuzz_fpn,
}


TARGETS = {name: fz.with_profile(_with_seeds(name, test)) for name, test in TARGETS.items()}


@pytest.mark.parametrize("target", list(TARGETS))
def test_fuzz(target):
    fz.run_examples(TARGETS[target])
