"""The CUDA kernels of the RoI ops (csrc/cuda/*.cu), run by the CPU emulation of the CUDA
execution model (detops/cuda_emulation.h) as ``torch.ops.detops_emulated.*``, against the
CPU kernels (``torch.ops.detops.*``) on the kinds of input the CPU tests use: random boxes
and boxes outside the map, on its borders, degenerate, negative, huge, NaN and infinite;
K = 0; sampling_ratio -1/0/2; aligned both ways; contiguous, channels_last and strided
inputs and gradients; float32/float64/float16/bfloat16; several FPN levels.

Exact (bitwise, NaN where NaN) where both devices run the same arithmetic: the roi_pool
forward (bin_max: values and argmax) and the ps_roi_pool forward (bin_mean), the same
roi_math.h code over the same elements in the same order.

Elsewhere the two devices add the same terms in a different order, so they agree to
rounding; FLOAT64_TOL and FLOAT32_TOL below are the allowances:
- roi_align / ps_roi_align / multi_level_roi_align forward: the CPU merges a RoI's samples
  into separable row and column tables and sums a bin as sum_rows w_y * sum_cols w_x * v,
  a CUDA thread adds the bin's bilinear taps sample by sample;
- every backward: CUDA atomics add the contributions to a gradient element in whatever
  order the threads run (the emulation runs 256 OS threads per block, so the order changes
  from run to run), the CPU's single writer per gradient plane adds them in RoI order.
A bin or gradient element sums a few dozen terms of magnitude <= ~4 (randn input), so in
float32 (float64) the two sums differ by a few ulps of that; the largest differences
measured on these cases are 7.7e-7 (8.9e-16), on roi_align gradients. atol and rtol of
1e-5 (1e-12) leave a margin of over 10x (1000x) and still fail on a wrong or missing tap,
whose error is of the order of the input (0.1 to 4). float16 and bfloat16 compute in
float32 on both devices and round once at the end, so a float32 difference of a few ulps
can flip that rounding by one ulp of the narrow type (measured: at most 8e-4 and 5.2e-3
relative, one ulp): their rtol is float32's plus two of their ulps (2^-9 for float16,
2^-6 for bfloat16), their atol float32's.

Invalid batch indices (out of range, fractional, NaN, infinite) and levels: the CPU raises
a RuntimeError naming rois[k, 0] / levels[k]; the CUDA kernels, which must not copy rois to
the host, give that RoI a zero row (roi_pool: argmax -1) and no gradient. Both are tested.

The last test checks that every __global__ kernel of csrc/cuda/*.cu was launched.
"""

import glob
import math
import os
import re
import zlib

import pytest
import torch
from roi_cases import backward_args, op_args

from detops_core.testing import cpu_vs_cuda_tolerance, emulated_launches, float_dtypes, require_emulated_ops

PACKAGE = "detops_roi"
N, C, H, W = 2, 3, 11, 13
DTYPES = float_dtypes()
# Agreement of the CPU and CUDA kernels in float64 and float32 (see the docstring); the
# narrow types get two of their ulps on top of float32's.
FLOAT64_TOL, FLOAT32_TOL = 1e-12, 1e-5
LAYOUTS = ["contiguous", "channels_last", "strided"]
cpu = torch.ops.detops


@pytest.fixture(scope="module")
def emu():
    return require_emulated_ops(PACKAGE)


def seed(*key):
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


def layout(t, kind):
    """`t` with the same values in another memory layout."""
    if kind == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if kind == "strided":
        # H and W swapped in memory, and every other channel: no stride is the natural one.
        n, c, h, w = t.shape
        s = torch.zeros(n, 2 * c, w, h, dtype=t.dtype).transpose(2, 3)[:, ::2]
        s.copy_(t)
        assert not s.is_contiguous() and not s.is_contiguous(memory_format=torch.channels_last)
        return s
    return t.contiguous()


def boxes(g, scale, n_images=N, h=H, w=W):
    """[K, 5] float64 RoIs in image coordinates (map / scale): every kind of adversarial box,
    then random ones."""
    ih, iw = h / scale, w / scale
    rand = torch.rand(8, 4, generator=g, dtype=torch.float64)
    xy = (rand[:, :2] * 1.2 - 0.1) * torch.tensor([iw, ih], dtype=torch.float64)
    wh = (0.02 + rand[:, 2:] * 0.7) * torch.tensor([iw, ih], dtype=torch.float64)
    inf, nan = math.inf, math.nan
    special = torch.tensor(
        [
            [0.3 * iw, 0.3 * ih, 0.3 * iw, 0.3 * ih],  # zero size
            [0.6 * iw, 0.5 * ih, 0.2 * iw, 0.1 * ih],  # negative size
            [1.5 * iw, 1.2 * ih, 2.0 * iw, 1.9 * ih],  # outside the map
            [-2.0 * iw, -2.0 * ih, -1.1 * iw, -1.5 * ih],  # outside, above-left
            [-0.4 * iw, -0.3 * ih, 0.35 * iw, 0.4 * ih],  # partly outside
            [0.0, 0.0, iw, ih],  # the whole map, on every border
            [0.5 * iw, 0.25 * ih, iw, ih],  # on the bottom-right border
            [iw, ih, iw, ih],  # a point on the far corner
            [iw - 0.5 / scale, 0.0, iw + 0.5 / scale, ih],  # straddling the last column
            [-1e6, -1e6, 1e6, 1e6],  # huge
            [-3e38, 0.0, 3e38, 0.5 * ih],  # width overflows float32
            [nan, 0.0, 0.5 * iw, 0.5 * ih],
            [0.0, nan, nan, nan],
            [0.0, 0.0, inf, 0.5 * ih],
            [-inf, -inf, inf, inf],
        ],
        dtype=torch.float64,
    )
    # Random boxes, then one well inside the map, last: the last output elements are then
    # non-zero, so a kernel that skips them leaves uninitialised memory where a value is
    # expected (where zero is expected, zeroed memory would pass).
    inside = torch.tensor([[0.2 * iw, 0.1 * ih, 0.8 * iw, 0.9 * ih]], dtype=torch.float64)
    all_boxes = torch.cat([special, torch.cat([xy, xy + wh], dim=1), inside])
    batch = (torch.arange(all_boxes.shape[0]) % n_images).to(torch.float64)
    return torch.cat([batch[:, None], all_boxes], dim=1)


def inputs(g, dtype, kind, c=C, h=H, w=W, n=N):
    return layout(torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to(dtype), kind)


def grad_like(g, out, kind):
    return layout(torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype), kind)


def assert_close(got, expected, dtype):
    assert got.dtype == expected.dtype and got.shape == expected.shape
    tol = cpu_vs_cuda_tolerance(dtype, FLOAT64_TOL, FLOAT32_TOL)
    torch.testing.assert_close(got, expected, equal_nan=True, **tol)


def assert_exact(got, expected):
    assert got.dtype == expected.dtype and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)


def forward_backward(ops, op, x, rois, grad_of, size=(2, 3), scale=0.5, sr=-1, aligned=True):
    """(output, argmax or None, input gradient) of `op` in `ops` (cpu or emulated);
    grad_of(out) is the output gradient."""
    result = getattr(ops, op)(*op_args(op, x, rois, size, scale, sr, aligned))
    out, argmax = result if op == "roi_pool" else (result, None)
    args = backward_args(op, grad_of(out), rois, x.shape, size, scale, sr, aligned, argmax=argmax)
    return out, argmax, getattr(ops, f"_{op}_backward")(*args)


def compare(emu, op, x, rois, dtype, key, exact_forward=False, **kw):
    """`op` on both devices with the same gradient: the forward exact or within the
    tolerance, the backward within the tolerance."""
    grad_kind = LAYOUTS[zlib.crc32(repr(key).encode()) % 3]
    results = []
    for ops in (cpu, emu):
        g = seed("grad", key)
        results.append(forward_backward(ops, op, x, rois, lambda out, g=g: grad_like(g, out, grad_kind), **kw))
    (out_c, _, gi_c), (out_e, _, gi_e) = results
    (assert_exact if exact_forward else lambda a, b: assert_close(a, b, dtype))(out_e, out_c)
    assert_close(gi_e, gi_c, dtype)
    return out_c


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("sr", [-1, 0, 2])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("scale", [1.0, 0.25])
@pytest.mark.parametrize("dtype", DTYPES)
def test_roi_align(emu, dtype, scale, aligned, sr, kind):
    key = ("roi_align", dtype, scale, aligned, sr, kind)
    g = seed(key)
    x = inputs(g, dtype, kind)
    rois = boxes(g, scale).to(dtype)
    out = compare(emu, "roi_align", x, rois, dtype, key, scale=scale, sr=sr, aligned=aligned)
    assert out.abs().sum() > 0  # the random boxes pool something


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("scale", [1.0, 0.25])
@pytest.mark.parametrize("dtype", DTYPES)
def test_roi_pool(emu, dtype, scale, kind):
    key = ("roi_pool", dtype, scale, kind)
    g = seed(key)
    x = inputs(g, dtype, "contiguous")
    # -inf and NaN in the map: `>` never takes NaN, and a bin of only those keeps -FLT_MAX.
    x.view(-1)[::7] = -math.inf if scale == 1.0 else math.nan
    x = layout(x, kind)
    rois = boxes(g, scale).to(dtype)
    out_c, arg_c = cpu.roi_pool(x, rois, scale, 3, 2)
    out_e, arg_e = emu.roi_pool(x, rois, scale, 3, 2)
    assert_exact(out_e, out_c)
    assert_exact(arg_e, arg_c)
    assert (arg_c >= 0).any() and (arg_c == -1).any()
    grad = grad_like(g, out_c, LAYOUTS[(LAYOUTS.index(kind) + 1) % 3])
    args = (grad, rois, arg_c, scale, 3, 2, *x.shape)
    assert_close(emu._roi_pool_backward(*args), cpu._roi_pool_backward(*args), dtype)


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("sr", [-1, 0, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_ps_roi_align(emu, dtype, sr, kind):
    key = ("ps_roi_align", dtype, sr, kind)
    g = seed(key)
    x = inputs(g, dtype, kind, c=2 * 6)
    rois = boxes(g, 0.5).to(dtype)
    compare(emu, "ps_roi_align", x, rois, dtype, key, scale=0.5, sr=sr)


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("scale", [1.0, 0.25])
@pytest.mark.parametrize("dtype", DTYPES)
def test_ps_roi_pool(emu, dtype, scale, kind):
    key = ("ps_roi_pool", dtype, scale, kind)
    g = seed(key)
    x = inputs(g, dtype, kind, c=2 * 6)
    rois = boxes(g, scale).to(dtype)
    compare(emu, "ps_roi_pool", x, rois, dtype, key, exact_forward=True, scale=scale)


LEVEL_SHAPES = [(11, 13), (6, 7), (3, 4)]
LEVEL_SCALES = [1.0, 0.5, 0.25]


def multi_level(ops, feats, rois, levels, grad, sr, aligned):
    out = ops.multi_level_roi_align(feats, LEVEL_SCALES, rois, levels, 3, 2, sr, aligned)
    heights = [h for h, _ in LEVEL_SHAPES]
    widths = [w for _, w in LEVEL_SHAPES]
    grads = ops._multi_level_roi_align_backward(
        grad, rois, levels, LEVEL_SCALES, heights, widths, N, C, 3, 2, sr, aligned
    )
    return out, grads


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("sr", [-1, 2])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_multi_level_roi_align(emu, dtype, aligned, sr, kind):
    key = ("multi_level", dtype, aligned, sr, kind)
    g = seed(key)
    feats = [inputs(g, dtype, kind, h=h, w=w) for h, w in LEVEL_SHAPES]
    rois = boxes(g, 1.0).to(dtype)
    levels = torch.randint(-1, 3, (rois.shape[0],), generator=g)
    levels[:4] = torch.tensor([-1, 0, 1, 2])
    grad = torch.randn(rois.shape[0], C, 3, 2, generator=g, dtype=torch.float64).to(dtype)
    grad = layout(grad, LAYOUTS[(LAYOUTS.index(kind) + 1) % 3])
    out_c, grads_c = multi_level(cpu, feats, rois, levels, grad, sr, aligned)
    out_e, grads_e = multi_level(emu, feats, rois, levels, grad, sr, aligned)
    assert_close(out_e, out_c, dtype)
    assert len(grads_e) == len(grads_c) == 3
    for a, b in zip(grads_e, grads_c):
        assert_close(a, b, dtype)
    assert torch.count_nonzero(out_c[levels == -1]) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_no_rois_and_empty_maps(emu, dtype):
    x = torch.randn(N, 12, H, W).to(dtype)
    none = torch.zeros(0, 5, dtype=dtype)
    for ops in (cpu, emu):
        assert ops.roi_align(x, none, 1.0, 2, 3, 2, True).shape == (0, 12, 2, 3)
        assert ops.ps_roi_align(x, none, 1.0, 2, 3, 2).shape == (0, 2, 2, 3)
        assert ops.ps_roi_pool(x, none, 1.0, 2, 3).shape == (0, 2, 2, 3)
        out, arg = ops.roi_pool(x, none, 1.0, 2, 3)
        assert out.shape == arg.shape == (0, 12, 2, 3)
        g = torch.zeros(0, 12, 2, 3, dtype=dtype)
        gp = torch.zeros(0, 2, 2, 3, dtype=dtype)
        for gi in (
            ops._roi_align_backward(g, none, 1.0, 2, 3, N, 12, H, W, 2, True),
            ops._roi_pool_backward(g, none, arg, 1.0, 2, 3, N, 12, H, W),
            ops._ps_roi_align_backward(gp, none, 1.0, 2, 3, 2, N, 12, H, W),
            ops._ps_roi_pool_backward(gp, none, 1.0, 2, 3, N, 12, H, W),
        ):
            assert gi.shape == (N, 12, H, W) and gi.dtype == dtype and torch.count_nonzero(gi) == 0
    # Maps with no rows or no columns pool to zeros and get an empty gradient.
    rois = boxes(seed("empty"), 1.0).to(dtype)
    for h, w in ((0, W), (H, 0)):
        x = torch.randn(N, 12, h, w).to(dtype)
        for name, sr in (("roi_align", -1), ("ps_roi_align", 2), ("ps_roi_pool", -1)):
            out = compare(emu, name, x, rois, dtype, (name, h, w), exact_forward=True, scale=1.0, sr=sr)
            assert torch.count_nonzero(out) == 0
        out_c, arg_c = cpu.roi_pool(x, rois, 1.0, 2, 3)
        out_e, arg_e = emu.roi_pool(x, rois, 1.0, 2, 3)
        assert_exact(out_e, out_c)
        assert_exact(arg_e, arg_c)


# --------------------------------------------------------------- invalid batch indices

BAD_BATCH = [2.0, 3.0, -1.0, 0.5, 1.25, -0.5, math.nan, math.inf, -math.inf, 1e30, -1e30, 2.0**63, 2.0**64]
BAD_ROWS = [1, 4, 7]
ALL_OPS = ["roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool", "multi_level_roi_align"]


def forward_backward_any(ops, op, x, rois, grad_of):
    """forward_backward for every op of ALL_OPS; multi_level_roi_align's gradient is its
    levels' gradients, flattened and concatenated."""
    if op != "multi_level_roi_align":
        return forward_backward(ops, op, x, rois, grad_of, sr=-1 if op == "roi_align" else 2)
    n, c, h, w = x.shape
    feats = [x, x[:, :, ::2, ::2].contiguous()]
    levels = torch.arange(rois.shape[0]) % 2
    out = ops.multi_level_roi_align(feats, [0.5, 0.25], rois, levels, 2, 3, 2, False)
    hs, ws = [f.shape[2] for f in feats], [f.shape[3] for f in feats]
    gis = ops._multi_level_roi_align_backward(grad_of(out), rois, levels, [0.5, 0.25], hs, ws, n, c, 2, 3, 2, False)
    return out, None, torch.cat([gi.flatten() for gi in gis])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("bad", BAD_BATCH)
@pytest.mark.parametrize("op", ALL_OPS)
def test_invalid_batch_index(emu, op, bad, dtype):
    g = seed("bad", op, bad, dtype)
    x = torch.randn(N, 12, H, W, generator=g).to(dtype)
    rois = boxes(g, 0.5)[-10:].to(dtype)
    rois[BAD_ROWS, 0] = torch.tensor(bad, dtype=torch.float64).to(dtype)
    keep = torch.ones(rois.shape[0], dtype=torch.bool)
    keep[BAD_ROWS] = False

    def grad_of(out):
        return torch.randn(out.shape, generator=seed("grad", op, bad, dtype)).to(dtype)

    # CPU: raises, naming the first bad row.
    with pytest.raises(RuntimeError, match=r"rois\[1, 0\] is the batch index of RoI 1 and must be an integer"):
        forward_backward_any(cpu, op, x, rois, grad_of)

    # CUDA: the bad rows are zero (argmax -1) and send no gradient. The expectation is the
    # CPU on the same RoIs with the bad rows moved to image 0 and given a zero gradient.
    out_e, arg_e, gi_e = forward_backward_any(emu, op, x, rois, grad_of)
    assert torch.count_nonzero(out_e[~keep]) == 0
    if arg_e is not None:
        assert (arg_e[~keep] == -1).all()
    valid = rois.clone()
    valid[~keep, 0] = 0
    out_c, arg_c, gi_c = forward_backward_any(cpu, op, x, valid, lambda out: grad_of(out) * keep[:, None, None, None])
    if op in ("roi_pool", "ps_roi_pool"):
        assert_exact(out_e[keep], out_c[keep])
    else:
        assert_close(out_e[keep], out_c[keep], dtype)
    if arg_e is not None:
        assert_exact(arg_e[keep], arg_c[keep])
    assert_close(gi_e, gi_c, dtype)


@pytest.mark.parametrize("bad", [3, 7, -2, -(2**40), 2**40, 2**62])
def test_invalid_level(emu, bad):
    g = seed("level", bad)
    feats = [torch.randn(N, C, h, w, generator=g) for h, w in LEVEL_SHAPES]
    rois = boxes(g, 1.0)[-10:].float()
    levels = torch.arange(rois.shape[0]) % 3
    levels[[2, 5]] = bad
    levels[6] = -1  # "no level" is valid on both
    grad = torch.randn(rois.shape[0], C, 3, 2, generator=g)
    with pytest.raises(RuntimeError, match=r"levels\[2\] must be in \[0, 2\] or -1"):
        multi_level(cpu, feats, rois, levels, grad, 2, True)
    out_e, grads_e = multi_level(emu, feats, rois, levels, grad, 2, True)
    dropped = (levels < -1) | (levels > 2)
    assert torch.count_nonzero(out_e[dropped | (levels == -1)]) == 0
    # On CPU, level -1 gives what the CUDA kernels give an invalid level.
    as_none = torch.where(dropped, torch.full_like(levels, -1), levels)
    out_c, grads_c = multi_level(cpu, feats, rois, as_none, grad, 2, True)
    assert_close(out_e, out_c, torch.float32)
    for a, b in zip(grads_e, grads_c):
        assert_close(a, b, torch.float32)


def test_bad_arguments_raise_the_cpu_message(emu):
    # The checks are shared (roi_entry.h): the same message on both devices.
    x, rois = torch.randn(1, 4, 5, 5), torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    calls = [
        lambda ops: ops.roi_align(x[0], rois, 1.0, 2, 2, 2, True),
        lambda ops: ops.roi_pool(x, rois.double(), 1.0, 2, 2),
        lambda ops: ops.ps_roi_align(x, rois, 1.0, 3, 3, 2),
        lambda ops: ops.ps_roi_pool(x, rois[:, :4], 1.0, 2, 2),
        lambda ops: ops.roi_align(x, rois, 1.0, 0, 2, 2, True),
        lambda ops: ops._roi_align_backward(torch.zeros(2, 4, 2, 2), rois, 1.0, 2, 2, 1, 4, 5, 5, 2, True),
        lambda ops: ops.multi_level_roi_align([x], [1.0, 0.5], rois, torch.zeros(1, dtype=torch.long), 2, 2, 2, True),
    ]
    for call in calls:
        with pytest.raises(RuntimeError) as on_cpu:
            call(cpu)
        with pytest.raises(RuntimeError) as emulated:
            call(emu)
        assert str(emulated.value).splitlines()[0] == str(on_cpu.value).splitlines()[0]


# ------------------------------------------------------------------ roi_align_rotated
# Forward: the CPU builds each RoI's tap table with the same roi_align_rotated_math.h code and
# sums a bin's taps in the same order as a CUDA thread, so the two are equal; the backward
# differs by the atomics' order (the docstring's tolerances).


def rotated_boxes(g, scale):
    """boxes() as rotated RoIs (centre, size, any angle): the same adversarial kinds."""
    rois = boxes(g, scale)
    x1, y1, x2, y2 = rois[:, 1:].unbind(1)
    r = torch.rand(len(rois), generator=g, dtype=torch.float64) * 360 - 180
    return torch.stack((rois[:, 0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, r), 1)


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("sr", [-1, 0, 2])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_roi_align_rotated(emu, dtype, aligned, sr, kind):
    g = seed("rotated", dtype, aligned, sr, kind)
    x = inputs(g, dtype, kind)
    rois = rotated_boxes(g, 0.5).to(dtype)
    out_e = emu.roi_align_rotated(x, rois, 0.5, 3, 2, sr, aligned)
    out_c = cpu.roi_align_rotated(x, rois, 0.5, 3, 2, sr, aligned)
    torch.testing.assert_close(out_e, out_c, rtol=0, atol=0, equal_nan=True)
    grad = grad_like(g, out_c, kind)
    args = (rois, 0.5, 3, 2, N, C, H, W, sr, aligned)
    assert_close(emu._roi_align_rotated_backward(grad, *args), cpu._roi_align_rotated_backward(grad, *args), dtype)


@pytest.mark.parametrize("bad", [2.0, -1.0, 0.5, math.nan, math.inf])
def test_roi_align_rotated_invalid_batch_index(emu, bad):
    # CPU: raises. CUDA: the bad row is zero and sends no gradient, i.e. the CPU's result
    # with that row moved to image 0 and given a zero gradient.
    g = seed("rotated-bad", bad)
    x = torch.randn(N, C, H, W, generator=g)
    rois = rotated_boxes(g, 1.0)[-6:].float()
    rois[1, 0] = bad
    with pytest.raises(RuntimeError, match=r"rois\[1, 0\] is the batch index of RoI 1"):
        cpu.roi_align_rotated(x, rois, 1.0, 2, 2, 2, True)
    valid = rois.clone()
    valid[1, 0] = 0
    out_e = emu.roi_align_rotated(x, rois, 1.0, 2, 2, 2, True)
    out_c = cpu.roi_align_rotated(x, valid, 1.0, 2, 2, 2, True)
    assert torch.count_nonzero(out_e[1]) == 0
    keep = torch.arange(6) != 1
    torch.testing.assert_close(out_e[keep], out_c[keep], rtol=0, atol=0)
    grad = torch.randn(out_e.shape, generator=g) * keep[:, None, None, None]
    args = (1.0, 2, 2, N, C, H, W, 2, True)
    assert_close(
        emu._roi_align_rotated_backward(grad, rois, *args),
        cpu._roi_align_rotated_backward(grad, valid, *args),
        torch.float32,
    )


def test_roi_align_rotated_bad_arguments_raise_the_cpu_message(emu):
    x, rois = torch.randn(1, 4, 5, 5), torch.tensor([[0, 2.0, 2.0, 3.0, 3.0, 10.0]])
    calls = [
        lambda ops: ops.roi_align_rotated(x, rois[:, :5], 1.0, 2, 2, 2, True),
        lambda ops: ops.roi_align_rotated(x, rois.double(), 1.0, 2, 2, 2, True),
        lambda ops: ops._roi_align_rotated_backward(torch.zeros(2, 4, 2, 2), rois, 1.0, 2, 2, 1, 4, 5, 5, 2, True),
    ]
    for call in calls:
        with pytest.raises(RuntimeError) as on_cpu:
            call(cpu)
        with pytest.raises(RuntimeError) as emulated:
            call(emu)
        assert str(emulated.value).splitlines()[0] == str(on_cpu.value).splitlines()[0]


# ------------------------------------------------------------------ every kernel ran

CUDA_SOURCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "csrc", "cuda")


def declared_kernels():
    """'<file stem without _kernel> <kernel>' for every __global__ function, as the
    emulation names launches."""
    names = set()
    for path in sorted(glob.glob(os.path.join(CUDA_SOURCES, "*.cu")) + glob.glob(os.path.join(CUDA_SOURCES, "*.cuh"))):
        stem = os.path.basename(path).split(".")[0].removesuffix("_kernel")
        for kernel in re.findall(r"__global__\s+void\s+(\w+)", open(path).read()):
            names.add(f"{stem} {kernel}")
    return names


def test_every_kernel_was_launched(emu):
    """Runs last (file order): every kernel must have been launched by a case above."""
    declared = declared_kernels()
    assert len(declared) == 10, declared
    launches = emulated_launches(PACKAGE)
    print("\nemulated launches per kernel:", dict(sorted(launches.items())))
    missing = sorted(k for k in declared if launches.get(k, 0) == 0)
    assert not missing, f"never launched: {missing}; launches: {launches}"
