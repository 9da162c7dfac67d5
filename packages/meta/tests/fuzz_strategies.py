"""Hypothesis strategies of test_fuzz.py: one drawn call per example, as a :class:`Call`
whose repr is the call itself (tensors as fuzz_support.T recipes).

Each example is drawn either *valid* (every argument of the right kind and consistent,
so that it reaches the kernels, but with extreme values: NaN / infinite / huge / negative
boxes and scales, empty dimensions, odd layouts, huge strides and sizes) or, 40% of the
time, *faulty*: then each argument is, with some probability, made invalid (wrong dtype,
shape, device, value). Without that split almost every example would stop at its first
argument check and the kernels would rarely see the extreme values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fuzz_support import FLOAT_DTYPES, SPECIAL_VALUES, T, fmt_float
from hypothesis import strategies as st


def _r(value) -> str:
    if isinstance(value, float):
        return fmt_float(value)
    return repr(value)


@dataclass
class Call:
    """One drawn example: ``name(**kw)``, or ``name(**ctor)(**kw)`` for a module."""

    name: str
    kw: dict
    ctor: dict | None = None
    extra: dict = field(default_factory=dict)

    def _repr_pretty_(self, printer, cycle) -> None:
        # Hypothesis prints failing examples with this: the compact, evaluable repr.
        printer.text(repr(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_r(v)}" for k, v in self.kw.items())
        if self.ctor is None:
            return f"{self.name}({args})"
        ctor = ", ".join(f"{k}={_r(v)}" for k, v in self.ctor.items())
        return f"{self.name}({ctor})({args})"


class Gen:
    """The draws of one example, valid or faulty (see the module docstring). Choices are
    integers that shrink to 0, i.e. towards the valid and the ordinary."""

    def __init__(self, draw):
        self.draw = draw
        self.faulty = draw(st.integers(0, 9)) >= 6

    def chance(self, p: float) -> bool:
        return self.draw(st.integers(0, 999)) >= 1000 * (1 - p)

    def bad(self, p: float = 0.15) -> bool:
        """Make this argument invalid? Never in a valid example."""
        return self.faulty and self.chance(p)

    def pick(self, options):
        return self.draw(st.sampled_from(options))

    def pick_bad(self, valid, invalid, p: float = 0.15):
        return self.pick(invalid) if self.bad(p) else self.pick(valid)

    def int(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def dtype(self, p: float = 0.12) -> str:
        if self.bad(p):
            return self.pick(("int64", "int32", "uint8", "bool"))
        return self.pick(("float32", "float32", "float32", "float64", "float64", "float16", "bfloat16"))

    def same_or_other_dtype(self, dtype: str, p: float = 0.08) -> str:
        return self.dtype(1.0) if self.bad(p) else dtype

    def device(self, p: float = 0.15) -> str:
        # A meta tensor is the one foreign device a CPU machine has: next to CPU tensors it
        # is a device mismatch; alone, the fake kernels run.
        return "meta" if self.bad(p) else "cpu"

    def grad(self) -> bool:
        return self.chance(0.3)

    def tensor(self, shape, dtype, *, device="cpu", grad=False, scale=1.0, extreme=True, fill=None) -> T:
        """A seeded random tensor recipe (values are never drawn one by one: maps are large)."""
        if fill is None:
            fill = self.pick(("normal", "normal", "extreme")) if extreme else "normal"
        return T(
            tuple(shape),
            dtype,
            fill=fill,
            seed=self.int(0, 2**16),
            scale=scale,
            layout=self.draw(layouts_for(len(shape))),
            device=device,
            grad=grad and dtype in FLOAT_DTYPES and device == "cpu",
        )

    def rows(self, k_max: int):
        # Hypothesis draws short lists most of the time: no RoI at all only now and then.
        if self.chance(0.12):
            return []
        return self.draw(st.lists(box_row(), min_size=1, max_size=k_max))


# ----------------------------------------------------------------------------- values


def layouts_for(rank: int) -> st.SearchStrategy[str]:
    choices = ["contiguous", "contiguous", "offset", "expanded"]
    if rank >= 1:
        choices.append("strided")
    if rank >= 2:
        choices.append("transposed")
    if rank == 4:
        choices += ["channels_last", "channels_last"]
    return st.sampled_from(choices)


def coordinate() -> st.SearchStrategy[float]:
    """One box coordinate: mostly ordinary values near a small map, sometimes extreme."""
    return st.one_of(
        st.integers(-4, 24).map(float),
        st.floats(-8, 40, allow_nan=False, width=32),
        st.sampled_from(SPECIAL_VALUES + (-1.0, 1e10, -1e10, 1e300, 2.0**53)),
    )


def box_row() -> st.SearchStrategy[tuple]:
    """(x1, y1, x2, y2) of one box, of a kind that matters for RoI ops: ordinary, negative
    width or height, spanning the whole float range, far away, NaN, a point."""

    @st.composite
    def draw_box(draw):
        kind = draw(
            st.sampled_from(["valid", "valid", "valid", "any", "negative", "span", "span", "far", "nonfinite", "point"])
        )
        if kind == "any":
            return tuple(draw(coordinate()) for _ in range(4))
        x1, y1 = draw(st.floats(-4, 20, width=32)), draw(st.floats(-4, 20, width=32))
        w, h = draw(st.floats(0, 24, width=32)), draw(st.floats(0, 24, width=32))
        if kind == "valid":
            return (x1, y1, x1 + w, y1 + h)
        if kind == "negative":
            # x2 < x1 and/or y2 < y1, e.g. [50, 10, 40, 30]
            flip_x, flip_y = draw(st.sampled_from([(True, False), (False, True), (True, True)]))
            return (x1, y1, x1 - w - 1 if flip_x else x1 + w, y1 - h - 1 if flip_y else y1 + h)
        if kind == "span":
            # From -big, or from an ordinary start, to +big: a finite start with an end
            # (or a width) that is infinite makes the widest possible sampling grid.
            big = draw(st.sampled_from([3e38, math.inf, 1e30, 1e10, 1e300, 2.0**40]))
            spans = draw(st.sampled_from(["x", "y", "both"]))
            from_start = draw(st.booleans())
            bx = ((x1 if from_start else -big), big) if spans in ("x", "both") else (x1, x1 + w)
            by = ((y1 if from_start else -big), big) if spans in ("y", "both") else (y1, y1 + h)
            return (bx[0], by[0], bx[1], by[1])
        if kind == "far":
            off = draw(st.sampled_from([1e4, -1e4, 1e8, -1e8, 1e30, -3e38]))
            return (x1 + off, y1 + off, x1 + w + off, y1 + h + off)
        if kind == "nonfinite":
            row = [x1, y1, x1 + w, y1 + h]
            row[draw(st.integers(0, 3))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
            return tuple(row)
        return (x1, y1, x1, y1)

    return draw_box()


# ----------------------------------------------------------------------------- palettes

# Valid but extreme: NaN / infinite / zero / negative / huge scales are defined inputs.
SCALES = [1.0, 1.0, 0.5, 0.25, 0.0625, 2.0, 0.0, -1.0, -0.5, math.nan, math.inf, -math.inf, 1e30, 1e-30, 1, 3]
BAD_SCALES = [None, "1.0"]
# <= 0 is adaptive; the most negative and the largest accepted values too.
SAMPLING = [-1, 0, 1, 2, 3, -1, 0, -5, -(2**62), 1024]
BAD_SAMPLING = [1025, 2**62, 2**63 - 1, 1.5, True, None]
# Too many bins for any memory (or for int64): must be refused, never attempted.
HUGE_SIZES = [(2**31, 2**31), (2**32, 2**32), (2**62, 4), (4, 2**62), (2**62, 2**62), (2**63 - 1, 1), (1, 2**40)]
BAD_SIZES = [(0, 2), (2, 0), (0, 0), (-1, 2), (3, -7), (-(2**63), 1), (2, -(2**62))]
NONINT_SIZES = [2.5, None, "2", (2, 1.5), (2**64, 1), (7,), [3]]
BAD_BATCH_INDICES = [-1.0, 0.5, math.nan, math.inf, -math.inf, 1e10, 2.0**53]

# Huge values are in the valid palettes: they are the extreme inputs, and the kernels
# have to refuse them by name when the sizes they imply overflow.
STRIDES = [1, 1, 1, 2, 3, 2**31, 2**62, 2**63 - 1]
PADDINGS = [0, 0, 0, 1, 2, 2**31, 2**62, 2**63 - 1]
DILATIONS = [1, 1, 1, 2, 3, 2**31, 2**62]
BAD_STRIDES = [0, -1, -(2**63)]
BAD_PADDINGS = [-1, -(2**62)]
BAD_DILATIONS = [0, -2]
MALFORMED_PAIRS = [1.5, "1", None, (1, 2, 3), (1,), (1, 2.0)]


def output_size(g: Gen):
    kind = g.pick(["int", "pair", "pair", "pair", "list", "huge"] + (["bad", "nonint"] if g.bad(0.5) else []))
    if kind == "int":
        return g.int(1, 4)
    if kind in ("pair", "list"):
        size = (g.int(1, 4), g.int(1, 4))
        return list(size) if kind == "list" else size
    if kind == "huge":
        return g.pick(HUGE_SIZES)
    return g.pick(BAD_SIZES if kind == "bad" else NONINT_SIZES)


def rows_values(rows, batch_col=None) -> tuple:
    out = []
    for i, r in enumerate(rows):
        if batch_col is not None:
            out.append(batch_col[i])
        out.extend(r)
    return tuple(out)


def batch_index(g: Gen, n: int) -> float:
    if n > 0 and not g.bad(0.2):
        return float(g.int(0, n - 1))
    return g.pick(BAD_BATCH_INDICES + [float(n), float(n) - 0.5])


def boxes_arg(g: Gen, n: int, dtype: str, k_max: int = 6):
    """boxes of the RoI ops: a Tensor[K, 5] of (batch index, x1, y1, x2, y2), or a list of
    Tensor[L, 4] with one entry per image (a list longer than the batch, in a faulty
    example)."""
    device = g.device()
    if g.chance(0.3):
        parts = []
        for _ in range(g.int(0, n + 1 if g.bad(0.3) else n)):
            rows = g.rows(3)
            cols = 4 if not g.bad(0.1) else g.pick([3, 5])
            values = rows_values(rows) if cols == 4 else tuple(0.0 for _ in range(len(rows) * cols))
            parts.append(T((len(rows), cols), dtype, values=values, layout=g.draw(layouts_for(2)), device=device))
        return parts
    rows = g.rows(k_max)
    batch = [batch_index(g, n) for _ in rows]
    if g.bad(0.1):
        k = len(rows)
        shape = g.pick([(k, 4), (k, 6), (k * 5,), (1, k, 5)])
        return T(shape, dtype, fill="normal", seed=g.int(0, 99), layout=g.draw(layouts_for(len(shape))), device=device)
    return T((len(rows), 5), dtype, values=rows_values(rows, batch), layout=g.draw(layouts_for(2)), device=device)


# ----------------------------------------------------------------------------- NMS


@st.composite
def nms_calls(draw, batched: bool):
    g = Gen(draw)
    n = g.pick([0, 1, 2, 3, 5, 8, 10, 300, 2000, 4100])
    big = n > 12
    dtype = g.dtype()
    shape = (n, 4) if not g.bad() else g.pick([(n,), (n, 5), (n, 4, 1), (n, 3), (4,)])
    device = g.device()
    if big or shape != (n, 4):
        boxes = g.tensor(shape, dtype, device=device, scale=50.0, fill=g.pick(["boxes", "boxes", "extreme"]))
    else:
        rows = draw(st.lists(box_row(), min_size=n, max_size=n))
        boxes = T(shape, dtype, values=rows_values(rows), layout=draw(layouts_for(2)), device=device)
    s_dtype = g.same_or_other_dtype(dtype)
    s_shape = (n,) if not g.bad() else g.pick([(n + 1,), (n, 1), (), (max(n - 1, 0),)])
    s_device = g.device(0.1) if device == "cpu" else device
    if big or s_shape != (n,):
        scores = g.tensor(s_shape, s_dtype, device=s_device, fill=g.pick(["uniform", "extreme"]))
    else:
        # Ties (0.5) and NaN scores decide the order boxes are visited in.
        score = st.one_of(st.floats(0, 1, width=32), st.sampled_from([0.5, 0.5, math.nan, math.inf, -math.inf, -1.0]))
        values = tuple(draw(st.lists(score, min_size=n, max_size=n)))
        scores = T(s_shape, s_dtype, values=values, layout=draw(layouts_for(1)), device=s_device)
    threshold = g.pick_bad(
        [0.5, 0.7, 0.0, 1.0, -0.5, 1.5, math.nan, math.inf, -math.inf, 1e-7, 0, 1, 0.3, 0.9], [None, "0.5"]
    )
    kw = {"boxes": boxes, "scores": scores}
    if batched:
        i_dtype = g.pick_bad(["int64", "int64", "int64", "int32", "int16", "uint8"], ["float32", "bool"])
        i_shape = (n,) if not g.bad() else g.pick([(n + 1,), (n, 1), ()])
        if big or i_shape != (n,) or i_dtype != "int64":
            scale = g.pick([1.0, 5.0, 40.0])
            idxs = T(i_shape, i_dtype, fill="uniform", scale=scale, seed=g.int(0, 999), device=s_device)
        else:
            cls = st.one_of(st.integers(0, 3), st.sampled_from([-(2**63), 2**63 - 1, -1, 2**40]))
            values = tuple(draw(st.lists(cls, min_size=n, max_size=n)))
            idxs = T(i_shape, "int64", values=values, layout=draw(layouts_for(1)), device=s_device)
        kw["idxs"] = idxs
    kw["iou_threshold"] = threshold
    return Call("detops.batched_nms" if batched else "detops.nms", kw)


# ----------------------------------------------------------------------------- box utilities

FORMATS = ["xyxy", "xyxy", "xywh", "cxcywh", "xywhr", "cxcywhr", "xyxyxyxy", "XYXY", "", "foo"]


@st.composite
def box_tensor(draw):
    g = Gen(draw)
    n = g.int(0, 5)
    shape = (n, 4) if not g.bad(0.5) else g.pick([(2, n, 4), (4,), (n, 5), (n, 3), (n,), (n, 6)])
    values = tuple(draw(st.lists(coordinate(), min_size=math.prod(shape), max_size=math.prod(shape))))
    return T(shape, g.dtype(0.3), values=values, layout=draw(layouts_for(len(shape))), device=g.device())


@st.composite
def box_util_calls(draw, name: str):
    g = Gen(draw)
    boxes = draw(box_tensor())

    def fmt():
        return g.pick_bad(["xyxy", "xyxy", "xywh", "cxcywh"], ["xywhr", "cxcywhr", "xyxyxyxy", "XYXY", "", "foo"])

    if name == "box_area":
        return Call("box_area", {"boxes": boxes, "fmt": fmt()})
    if name == "box_iou":
        return Call("box_iou", {"boxes1": boxes, "boxes2": draw(box_tensor()), "fmt": fmt()})
    if name == "box_convert":
        return Call("box_convert", {"boxes": boxes, "in_fmt": fmt(), "out_fmt": fmt()})
    if name == "clip_boxes_to_image":
        side = st.one_of(
            st.integers(0, 30), st.sampled_from([-5, 2**40, 2**63 - 1]), st.sampled_from([math.nan, math.inf, 7.5])
        )
        return Call("clip_boxes_to_image", {"boxes": boxes, "size": (draw(side), draw(side))})
    size = st.one_of(st.floats(-1, 30), st.sampled_from([math.nan, math.inf, -math.inf, 0, 1e30]))
    return Call("remove_small_boxes", {"boxes": boxes, "min_size": draw(size)})


# ----------------------------------------------------------------------------- RoI ops

MODULES = {"roi_align": "RoIAlign", "roi_pool": "RoIPool", "ps_roi_align": "PSRoIAlign", "ps_roi_pool": "PSRoIPool"}


def _is_small_pair(size) -> bool:
    pair = size if isinstance(size, (list, tuple)) else (size, size)
    return len(pair) >= 2 and all(isinstance(v, int) and 1 <= v <= 4 for v in pair[:2])


@st.composite
def roi_calls(draw, op: str, module: bool):
    g = Gen(draw)
    size = output_size(g)
    # Empty dimensions come last in the palettes: Hypothesis favours the first entries.
    n = g.pick([1, 2, 3, 0])
    if op.startswith("ps_") and _is_small_pair(size) and not g.bad(0.3):
        pair = size if isinstance(size, (list, tuple)) else (size, size)
        c = g.pick([1, 2, 0]) * pair[0] * pair[1]
    else:
        c = g.pick([1, 2, 3, 4, 5, 8, 0])
    shape = (n, c, g.pick([1, 2, 5, 8, 12, 0]), g.pick([1, 3, 6, 9, 12, 0]))
    if g.bad(0.1):
        shape = g.pick([shape[1:], shape + (1,)])
    dtype = g.dtype()
    x = g.tensor(shape, dtype, device=g.device(), grad=g.grad())
    boxes = boxes_arg(g, n, g.same_or_other_dtype(dtype))
    params = {"output_size": size, "spatial_scale": g.pick_bad(SCALES, BAD_SCALES, 0.1)}
    if op.endswith("align"):
        params["sampling_ratio"] = g.pick_bad(SAMPLING, BAD_SAMPLING)
    if op == "roi_align":
        params["aligned"] = draw(st.booleans())
    if module:
        return Call("detops." + MODULES[op], {"input": x, "rois": boxes}, ctor=params, extra={"op": op})
    return Call("detops." + op, {"input": x, "boxes": boxes, **params}, extra={"op": op})


@st.composite
def multi_level_calls(draw):
    g = Gen(draw)
    n, c = g.pick([1, 2, 0]), g.pick([1, 3, 0])
    dtype = g.dtype()
    device = g.device()
    levels_n = g.pick([1, 2, 3, 4, 0] if g.faulty else [1, 2, 3, 4])
    grad = g.grad()
    features = []
    for _ in range(levels_n):
        shape = (n, c, g.pick([1, 4, 8, 0]), g.pick([2, 5, 8, 0]))
        if g.bad(0.1):
            shape = g.pick([(n, c + 1, 4, 4), (n + 1, c, 4, 4), (c, 4, 4)])
        features.append(g.tensor(shape, g.same_or_other_dtype(dtype), device=device, grad=grad))
    rows = g.rows(6)
    batch = [batch_index(g, n) for _ in rows]
    r_dtype = g.same_or_other_dtype(dtype)
    rois = T((len(rows), 5), r_dtype, values=rows_values(rows, batch), layout=draw(layouts_for(2)), device=g.device())
    # -1 is "no level" (a zero row); -2, the level count and beyond are invalid.
    valid_level = st.integers(-1, max(levels_n - 1, -1))
    level = valid_level if not g.bad(0.3) else st.sampled_from([-2, levels_n, 2**40, -(2**63)])
    l_dtype = g.pick_bad(["int64"] * 6 + ["int32", "uint8"], ["float32", "bool"])
    l_shape = (len(rows),) if not g.bad() else g.pick([(len(rows) + 1,), (len(rows), 1)])
    values = tuple(draw(st.lists(level, min_size=math.prod(l_shape), max_size=math.prod(l_shape))))
    levels = T(l_shape, l_dtype, values=values, device=g.device())
    scales = [g.pick([1.0, 0.5, 0.25, 0.125, 0.0, -1.0, math.nan, math.inf]) for _ in range(levels_n)]
    if g.bad(0.1):
        scales = scales + [0.5]
    kw = {
        "features": features,
        "rois": rois,
        "levels": levels,
        "output_size": output_size(g),
        "spatial_scales": scales,
        "sampling_ratio": g.pick_bad(SAMPLING, BAD_SAMPLING[:3]),
        "aligned": draw(st.booleans()),
    }
    return Call("detops_roi.multi_level_roi_align", kw)


@st.composite
def multiscale_calls(draw):
    g = Gen(draw)
    n, c = g.pick([1, 2, 0]), g.pick([1, 2, 3, 0])
    dtype = g.pick_bad(["float32"] * 4 + ["float64", "float16", "bfloat16"], ["int64"])
    device = g.device()
    grad = g.grad()
    base = g.pick([1, 3, 8, 16, 32, 0])
    x = {}
    for i, name in enumerate(["0", "1", "2", "3"][: g.int(1, 4)]):
        h = base >> i if not g.chance(0.15) else g.pick([1, 7, 40, 0])
        w = max(base >> i, 1) if not g.chance(0.15) else g.pick([1, 9, 0])
        x[name] = g.tensor((n, c, h, w), dtype, device=device, grad=grad)
    names = list(x)
    featmap = g.pick([names, names, names[:1], names[::2], names[1:] or names, names + ["pool"]])
    if g.bad(0.1):
        featmap = ["nope"]
    images = n if not g.bad(0.3) else g.int(0, n + 1)
    boxes = []
    for _ in range(images):
        rows = g.rows(3)
        boxes.append(T((len(rows), 4), dtype, values=rows_values(rows), layout=draw(layouts_for(2)), device=device))
    side = [32, 64, 128, 100, 800] if not g.chance(0.15) else [0, 1, -32, 2**31]
    image_shapes = [(g.pick(side), g.pick(side)) for _ in range(g.pick([1, 1, 2] if not g.bad(0.2) else [0]))]
    ctor = {
        "featmap_names": featmap,
        "output_size": g.pick([1, 2, (2, 3), 7] if not g.chance(0.2) else BAD_SIZES + HUGE_SIZES),
        "sampling_ratio": g.pick(SAMPLING),
        "canonical_scale": g.pick([224, 224, 224, 16, 1, 0, -5, 10**9]),
        "canonical_level": g.pick([4, 4, 4, 2, 0, -3, 100]),
    }
    return Call("detops.MultiScaleRoIAlign", {"x": x, "boxes": boxes, "image_shapes": image_shapes}, ctor=ctor)


# ----------------------------------------------------------------------------- deformable convolution


def conv_param(g: Gen, valid, invalid):
    if g.bad(0.05):
        return g.pick(MALFORMED_PAIRS)
    if g.chance(0.3):
        return (g.pick_bad(valid, invalid), g.pick_bad(valid, invalid))
    return g.pick_bad(valid, invalid)


def conv_pair(value):
    """(h, w) of a stride / padding / dilation argument, or None if malformed."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(type(v) is int for v in value):
        return tuple(value)
    return None


def _out_len(size, pad, dil, k, stride):
    return (size + 2 * pad - (dil * (k - 1) + 1)) // stride + 1


def deform_tensors(g: Gen, cin, cout, weight_in, kh, kw, stride, padding, dilation):
    """input, offset, weight, mask, bias recipes for given layer sizes: consistent in a
    valid example (offset and mask of the output's size)."""
    b = g.pick([1, 2, 0])
    h, w = g.pick([1, 3, 5, 8, 0]), g.pick([1, 4, 6, 9, 0])
    dtype = g.dtype()
    device = g.device(0.1)
    grad = g.grad()
    og = g.pick([d for d in range(1, max(cin, 1) + 1) if cin % d == 0])
    s, p, d = conv_pair(stride), conv_pair(padding), conv_pair(dilation)
    oh = ow = 2
    if s and p and d and min(s) > 0 and min(d) > 0 and min(p) >= 0:
        oh, ow = _out_len(h, p[0], d[0], kh, s[0]), _out_len(w, p[1], d[1], kw, s[1])
        if not (0 <= oh <= 40 and 0 <= ow <= 40):
            # No offset can have this output's size: the call has to refuse the sizes.
            oh, ow = 2, 2
    taps = kh * kw
    off_shape = (b, 2 * og * taps, oh, ow)
    if g.bad(0.2):
        off_shape = g.pick([(b, 2 * og * taps + 1, oh, ow), (b, 0, oh, ow), (b + 1, 2 * og * taps, oh, ow)])
        off_shape = g.pick([off_shape, (b, 2 * og * taps, oh + 1, ow), (b, 2 * og * taps, oh)])
    x_shape = (b, cin, h, w) if not g.bad(0.05) else (cin, h, w)
    x = g.tensor(x_shape, dtype, device=device, grad=grad)
    offset_device = g.device(0.1) if device == "cpu" else device
    offset_scale = g.pick([0.5, 2.0, 5.0])
    offset = g.tensor(off_shape, g.same_or_other_dtype(dtype), device=offset_device, grad=grad, scale=offset_scale)
    weight = g.tensor((cout, weight_in, kh, kw), g.same_or_other_dtype(dtype), device=device, grad=grad, extreme=False)
    mask = None
    if g.chance(0.5):
        m_shape = (b, og * taps, oh, ow)
        if g.bad(0.15):
            m_shape = g.pick([(b, og * taps + 1, oh, ow), (b, og * taps, oh, ow + 1), (b + 1, og * taps, oh, ow)])
        fill = g.pick(["uniform", "uniform", "extreme"])
        mask = g.tensor(m_shape, g.same_or_other_dtype(dtype), device=device, grad=grad, fill=fill)
    bias = None
    if g.chance(0.5):
        b_shape = (cout,) if not g.bad(0.1) else (cout + 1,)
        bias = g.tensor(b_shape, g.same_or_other_dtype(dtype), device=device, grad=grad, extreme=False)
    return x, offset, weight, mask, bias


@st.composite
def deform_calls(draw):
    g = Gen(draw)
    # 0 input channels is an empty dimension, not a malformed call: drawn in valid examples.
    cin = g.pick([1, 2, 3, 4, 6, 0])
    groups = g.pick([d for d in (1, 2, 3) if cin % d == 0])
    cout = g.pick([1, 2, 3, 4, 0])
    if cout % groups and not g.bad(0.3):
        cout = groups
    weight_in = cin // groups if cin else g.pick([1, 2, 0])
    if g.bad(0.1):
        weight_in = g.pick([0, cin + 1, max(cin - 1, 0)])
    kh, kw = g.pick([1, 2, 3, 3]), g.pick([1, 2, 3, 3])
    if g.bad(0.1):
        kh = 0
    stride = conv_param(g, STRIDES, BAD_STRIDES)
    padding = conv_param(g, PADDINGS, BAD_PADDINGS)
    dilation = conv_param(g, DILATIONS, BAD_DILATIONS)
    x, offset, weight, mask, bias = deform_tensors(g, cin, cout, weight_in, kh, kw, stride, padding, dilation)
    kw_ = {"input": x, "offset": offset, "weight": weight, "bias": bias}
    kw_.update({"stride": stride, "padding": padding, "dilation": dilation, "mask": mask})
    return Call("detops.deform_conv2d", kw_)


@st.composite
def deform_module_calls(draw):
    g = Gen(draw)
    ctor = {
        "in_channels": g.pick_bad([1, 2, 4, 4], [0, -1, 2**40]),
        "out_channels": g.pick_bad([1, 2, 4, 4, 0], [-1, 2**40]),
        "kernel_size": g.pick_bad([1, 2, 3, 3, (1, 2)], [0, -1, (3,), (2, 0)]),
        "stride": conv_param(g, STRIDES, BAD_STRIDES),
        "padding": conv_param(g, PADDINGS, BAD_PADDINGS),
        "dilation": conv_param(g, DILATIONS, BAD_DILATIONS),
        "groups": g.pick_bad([1, 1, 2], [0, -1, 3]),
        "bias": draw(st.booleans()),
    }
    cin = ctor["in_channels"] if 0 < ctor["in_channels"] <= 8 else 2
    if g.bad(0.2):
        cin = g.pick([1, 3, 5])
    k = conv_pair(ctor["kernel_size"]) or (1, 1)
    k = tuple(max(min(v, 3), 0) for v in k)
    groups = ctor["groups"] if ctor["groups"] > 0 else 1
    stride, padding, dilation = ctor["stride"], ctor["padding"], ctor["dilation"]
    x, offset, _, mask, _ = deform_tensors(g, cin, 1, max(cin // groups, 1), k[0], k[1], stride, padding, dilation)
    return Call("detops.DeformConv2d", {"input": x, "offset": offset, "mask": mask}, ctor=ctor)


# ----------------------------------------------------------------------------- FPN


@st.composite
def upsample_calls(draw):
    g = Gen(draw)
    n, c = g.pick([1, 2, 0]), g.pick([1, 2, 3, 0])
    top_shape = (n, c, g.pick([1, 2, 3, 5, 0]), g.pick([1, 2, 4, 0]))
    lat_shape = (n, c, g.pick([1, 2, 4, 6, 9, 64, 0]), g.pick([1, 3, 4, 8, 100, 0]))
    if g.bad(0.2):
        top_shape = g.pick([(n + 1, c, 2, 2), (n, c + 1, 2, 2), (c, 2, 2), (n, c, 2, 2, 1)])
    dtype = g.dtype()
    # Mixed floating dtypes are valid (promoted as lateral + upsampled would be).
    l_dtype = g.pick([dtype, dtype, dtype, "float32", "float64", "float16", "bfloat16"])
    if g.bad(0.1):
        l_dtype = g.dtype(1.0)
    device = g.device()
    grad = g.grad()
    top = g.tensor(top_shape, dtype, device=device, grad=grad)
    lateral = g.tensor(lat_shape, l_dtype, device=g.device(0.1) if device == "cpu" else device, grad=grad)
    return Call("detops_fpn.fpn_upsample_add", {"top": top, "lateral": lateral})


CHANNELS = [1, 2, 3, 4, 1, 2]
BAD_CHANNELS = [0, -1, 2**40]


@st.composite
def fpn_calls(draw):
    g = Gen(draw)
    levels = g.int(1, 4)
    in_list = [g.pick_bad(CHANNELS, BAD_CHANNELS, 0.1) for _ in range(levels)]
    out_channels = g.pick_bad([1, 2, 3, 4, 4, 0], [-1, 2**40], 0.1)
    extra = g.pick_bad(["none", "none", "maxpool", "p6p7", "p6p7_same", "base"], ["bad"], 0.1)
    extra_args = (g.pick_bad(CHANNELS, BAD_CHANNELS, 0.1), g.pick(CHANNELS)) if extra == "p6p7" else ()
    norm = g.pick([None, None, "BatchNorm2d"])
    n = g.pick([1, 2, 0])
    dtype = g.pick_bad(["float32"], ["float64", "float16", "int64"])
    device = g.device(0.2)
    grad = g.grad()
    x = {}
    size = g.pick([1, 4, 8, 16, 0])
    for i, c in enumerate(in_list):
        c = c if 0 <= c <= 8 else 1
        if g.bad(0.1):
            c += 1
        h = max(size >> i, 1) if not g.chance(0.2) else g.pick([1, 3, 11, 0])
        w = max(size >> i, 1) if not g.chance(0.2) else g.pick([1, 5, 0])
        x[f"feat{i}"] = g.tensor((n, c, h, w), dtype, device=device, grad=grad)
    ctor = {
        "in_channels_list": in_list,
        "out_channels": out_channels,
        "extra_blocks": extra,
        "extra_args": extra_args,
        "norm_layer": norm,
    }
    return Call("detops.FeaturePyramidNetwork", {"x": x}, ctor=ctor)
