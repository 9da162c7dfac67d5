"""Forward and backward of the four RoI ops against the pure-PyTorch reference (always)
and torchvision 0.29.1 (when it is installed): degenerate, negative-size, out-of-image and
border boxes, aligned True/False, sampling_ratio -1/0/2, several scales, both box formats,
non-contiguous and channels_last inputs, several images per batch."""

import zlib

import pytest
import roi_reference  # noqa: F401  (registers the oracles)
import torch
from roi_cases import OPS, H, W, box_list, channels, make_rois, options

from detops_core.testing import call, devices, oracles

CASES = [
    # oracle, op, output_size, scale, sampling_ratio, aligned
    (oracle, op, size, scale, sr, aligned)
    for op in OPS
    for oracle in oracles(op)
    for size, scale in (((2, 3), 1.0), (3, 0.25), (2, 1.0 / 16))
    for sr in ((-1, 0, 2) if "align" in op else (-1,))
    for aligned in ((False, True) if op == "roi_align" else (False,))
]
ORACLE_OPS = [(oracle, op) for op in OPS for oracle in oracles(op)]


@pytest.mark.parametrize("oracle,op,size,scale,sr,aligned", CASES)
@pytest.mark.parametrize("device", devices())
def test_forward_backward(oracle, op, size, scale, sr, aligned, device):
    g = torch.Generator().manual_seed(zlib.crc32(repr((op, size, scale, sr, aligned)).encode()))
    n = 2
    x = torch.randn(n, channels(op, size), H, W, generator=g, dtype=torch.float64)
    rois = make_rois(n, scale, g)
    if op == "ps_roi_pool" and oracle == "torchvision":
        # torchvision's ps_roi_pool backward adds gradient to the last row and column,
        # which its own forward never reads; keep its boxes clear of them.
        rois[:, 1:].clamp_(max=min(H, W) / scale - 2.5 / scale)
    x, rois = x.to(device), rois.to(device)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    kw = options(op, size, scale, sr, aligned)
    ours = call(op, "detops", x1, rois, **kw)
    theirs = call(op, oracle, x2, rois, **kw)
    if op == "ps_roi_align" and oracle == "torchvision":
        # torchvision divides 0 by 0 for bins without samples (NaN); detops returns 0.
        theirs = torch.nan_to_num(theirs, nan=0.0)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    assert ours.device == x.device
    grad = torch.randn(ours.shape, generator=g, dtype=torch.float64).to(device)
    (g1,) = torch.autograd.grad(ours, x1, grad)
    (g2,) = torch.autograd.grad(call(op, oracle, x2, rois, **kw), x2, grad)
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("oracle,op", ORACLE_OPS)
@pytest.mark.parametrize("layout", ["list", "channels_last", "noncontiguous"])
@pytest.mark.parametrize("device", devices())
def test_layouts_and_box_formats(oracle, op, layout, device):
    g = torch.Generator().manual_seed(7)
    n, size, scale = 3, 2, 0.5
    x = torch.randn(n, channels(op, size), H, W, generator=g, dtype=torch.float64).to(device)
    rois = make_rois(n, scale, g).to(device)
    kw = options(op, size, scale, 2, True)
    expected = call(op, oracle, x, rois, **kw)
    boxes = rois
    if layout == "list":
        order = torch.argsort(rois[:, 0], stable=True)
        expected = expected[order]
        boxes = box_list(rois, n)
    elif layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    else:
        xt = torch.empty(n, x.shape[1], W, H, dtype=x.dtype, device=device).transpose(2, 3)
        xt.copy_(x)
        assert not xt.is_contiguous()
        x = xt
        boxes = rois.t().contiguous().t()  # non-contiguous rois too
    got = call(op, "detops", x, boxes, **kw)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("device", devices())
def test_narrow_dtypes_compute_in_float32(op, dtype, device):
    """float32 against the float64 reference; float16/bfloat16 against the float32 result
    on the same (rounded) values, rounded once."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, channels(op, 2), H, W, generator=g).to(device, dtype)
    rois = make_rois(2, 0.5, g, torch.float32).to(device, dtype)
    kw = options(op, 2, 0.5, 2, True)
    got = call(op, "detops", x, rois, **kw)
    assert got.dtype == dtype
    if dtype == torch.float32:
        ref = call(op, "reference", x.double(), rois.double(), **kw).float()
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    else:
        ref = call(op, "detops", x.float(), rois.float(), **kw).to(dtype)
        torch.testing.assert_close(got, ref, rtol=0, atol=0) if op.endswith("pool") else torch.testing.assert_close(
            got.float(), ref.float(), rtol=1e-2, atol=1e-2
        )
    xg = x.clone().requires_grad_()
    out = call(op, "detops", xg, rois, **kw)
    (grad,) = torch.autograd.grad(out, xg, torch.ones_like(out))
    assert grad.dtype == dtype
    xf = x.float().requires_grad_()
    out_f = call(op, "detops", xf, rois.float(), **kw)
    (grad_f,) = torch.autograd.grad(out_f, xf, torch.ones_like(out_f))
    torch.testing.assert_close(grad.float(), grad_f, rtol=2e-2, atol=2e-2)
