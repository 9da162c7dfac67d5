"""roi_align, roi_pool, ps_roi_align, ps_roi_pool and multi_level_roi_align on CUDA against
the same call on the CPU: forward and backward, in every dtype, on random boxes plus
degenerate, negative, outside, border-touching, huge, NaN and infinite ones.

Tolerances, stated per op and direction as (float64, float32) pairs in TOLERANCE below; see
detops_core.testing.cpu_vs_cuda_tolerance for float16 / bfloat16 (both devices compute in
float32 and round once, so the narrow tolerance adds two ulps of the narrow type):
- roi_pool and ps_roi_pool forward: identical (bitwise, argmax included). Both devices run
  roi_math.h's bin_max / bin_mean over the same elements in the same order.
- roi_align, ps_roi_align and multi_level_roi_align forward: (1e-12, 1e-5). The CPU sums a
  bin through separable row and column tables, a CUDA thread sample by sample: the same
  terms in another order.
- every backward: (1e-12, 1e-5). CUDA adds each contribution with an atomic, in whatever
  order the threads run, into a float32 (float64) buffer; the CPU adds them in RoI order.
Values are compared after dividing by the result's largest magnitude (>= 1): a bin or a
gradient element sums a few dozen terms of randn input, so float32 order differences are a
few 1e-7; a wrong or missing tap is off by the order of the input (0.1 to 4).
"""

import zlib

import pytest
import torch
from roi_cases import MODULES, OPS, H, W, channels, make_rois, op_args, options

from detops_core.testing import assert_cuda_matches_cpu, cpu_vs_cuda_tolerance, float_dtypes, requires_cuda, to_device

pytestmark = requires_cuda()

EXACT = None
ORDER = (1e-12, 1e-5)  # the same terms summed in another order
TOLERANCE = {  # op: (forward, backward)
    "roi_align": (ORDER, ORDER),
    "roi_pool": (EXACT, ORDER),
    "ps_roi_align": (ORDER, ORDER),
    "ps_roi_pool": (EXACT, ORDER),
    "multi_level_roi_align": (ORDER, ORDER),
}


def _tol(pair, dtype):
    return None if pair is EXACT else cpu_vs_cuda_tolerance(dtype, *pair)


def _rois(n_images, scale, seed, count=60):
    """make_rois' boxes (random, zero-size, negative, outside, partly outside, whole map,
    border), many more random ones, and huge and non-finite ones."""
    g = torch.Generator().manual_seed(seed)
    special = make_rois(n_images, scale, g)
    ih, iw = H / scale, W / scale
    corner = torch.rand(count, 2, generator=g, dtype=torch.float64) * torch.tensor([iw, ih]) * 1.2 - 0.1 * iw
    size = torch.rand(count, 2, generator=g, dtype=torch.float64) * torch.tensor([iw, ih]) * 0.7
    batch = torch.randint(0, n_images, (count, 1), generator=g).double()
    nan, inf = float("nan"), float("inf")
    extreme = torch.tensor(
        [[0, nan, 1, 5, 5], [0, 1, 1, inf, 5], [0, -inf, -inf, inf, inf], [0, -1e30, -1e30, 1e30, 1e30]],
        dtype=torch.float64,
    )
    return torch.cat([special, torch.cat([batch, corner, corner + size], dim=1), extreme])


def _compare(fn, inputs, dtype, tolerance, seed):
    """fn(*inputs) on the CPU and on CUDA: outputs and the gradients of every floating
    input that requires grad, for one random output gradient."""
    forward_tol, backward_tol = tolerance
    results = {}
    for device in ("cpu", "cuda"):
        args = to_device(list(inputs), device)
        flat = [a for arg in args for a in (arg if isinstance(arg, list) else [arg])]
        leaves = [a for a in flat if isinstance(a, torch.Tensor) and a.requires_grad]
        outs = fn(*args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        g = torch.Generator().manual_seed(seed)
        grad = torch.randn(outs[0].shape, generator=g).to(device, dtype)
        results[device] = outs, torch.autograd.grad(outs[0], leaves, grad)
    (cpu_outs, cpu_grads), (cuda_outs, cuda_grads) = results["cpu"], results["cuda"]
    assert_cuda_matches_cpu(cuda_outs[0], cpu_outs[0], _tol(forward_tol, dtype), "output")
    for k, (a, b) in enumerate(zip(cuda_outs[1:], cpu_outs[1:])):
        assert_cuda_matches_cpu(a, b, None, f"output {k + 1}")  # roi_pool's argmax
    assert len(cuda_grads) == len(cpu_grads) > 0
    for k, (a, b) in enumerate(zip(cuda_grads, cpu_grads)):
        assert_cuda_matches_cpu(a, b, _tol(backward_tol, dtype), f"gradient {k}")


CASES = [
    # op, output_size, spatial_scale, sampling_ratio, aligned
    *[("roi_align", (7, 5), 0.5, sr, aligned) for sr in (-1, 0, 2) for aligned in (False, True)],
    ("roi_pool", (7, 5), 0.5, None, None),
    ("roi_pool", (3, 3), 1 / 16, None, None),
    *[("ps_roi_align", (3, 2), 0.5, sr, None) for sr in (-1, 2)],
    ("ps_roi_pool", (3, 2), 0.5, None, None),
    ("ps_roi_pool", (2, 2), 1 / 16, None, None),
]


def _op(op, size, scale, sr, aligned):
    forward = getattr(torch.ops.detops, op)
    return lambda x, r: forward(*op_args(op, x, r, size, scale, sr, aligned))


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("op,size,scale,sr,aligned", CASES, ids=lambda v: str(v))
def test_roi_op(op, size, scale, sr, aligned, dtype):
    seed = zlib.crc32(repr((op, size, sr, aligned)).encode())
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, channels(op, size) * 2, H, W, generator=g).to(dtype).requires_grad_()
    rois = _rois(3, scale, seed).to(dtype)
    _compare(_op(op, size, scale, sr, aligned), [x, rois], dtype, TOLERANCE[op], seed)


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("op", OPS)
def test_roi_op_layouts(op, layout, dtype):
    """Non-contiguous feature maps and RoIs: the CUDA kernels index through strides."""
    g = torch.Generator().manual_seed(17)
    x = torch.randn(2, channels(op, 2) * 2, H, W, generator=g).to(dtype)
    rois = _rois(2, 0.5, 17).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    else:
        x = x.transpose(2, 3).contiguous().transpose(2, 3)
        rois = rois.t().contiguous().t()
    sr = 2 if "align" in op else None
    _compare(_op(op, (2, 2), 0.5, sr, True), [x.requires_grad_(), rois], dtype, TOLERANCE[op], 17)


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("sr,aligned", [(-1, False), (2, True), (0, True)])
def test_multi_level_roi_align(sr, aligned, dtype):
    g = torch.Generator().manual_seed(23)
    scales = [0.5, 0.25, 0.125]
    feats = [torch.randn(2, 6, 2 * H // s, 2 * W // s, generator=g).to(dtype).requires_grad_() for s in (1, 2, 4)]
    rois = _rois(2, 1.0, 23).to(dtype)
    levels = torch.randint(-1, 3, (rois.shape[0],), generator=g)  # -1: no level, a zero row

    def fn(features, r, lv):
        return torch.ops.detops.multi_level_roi_align(features, scales, r, lv, 4, 3, sr, aligned)

    _compare(fn, [feats, rois, levels], dtype, TOLERANCE["multi_level_roi_align"], 23)


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("op", sorted(MODULES))
def test_modules_and_box_lists(op, dtype):
    """The Python wrappers and modules on a list of per-image boxes, as detectors call them."""
    g = torch.Generator().manual_seed(29)
    x = torch.randn(2, 8, H, W, generator=g).to(dtype).requires_grad_()
    rois = _rois(2, 0.5, 29)
    boxes = [rois[rois[:, 0] == i, 1:].to(dtype) for i in range(2)]
    # roi_align adaptive and aligned, ps_roi_align with 2 x 2 samples: both sampling paths.
    module = MODULES[op](**options(op, (2, 2), 0.5, -1 if op == "roi_align" else 2, True))
    _compare(lambda t, *b: module(t, list(b)), [x, *boxes], dtype, TOLERANCE[op], 29)
