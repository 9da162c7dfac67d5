"""Forward and backward of the four RoI ops against the pure-PyTorch reference (always)
and torchvision 0.29.1 (when it is installed): degenerate, negative-size, out-of-image and
border boxes, aligned True/False, sampling_ratio -1/0/2, several scales, both box formats,
non-contiguous and channels_last inputs, several images per batch."""

import zlib

import pytest
import roi_reference
import torch

import detops_roi
from detops_core.testing import devices

try:
    import torchvision.ops as tv_ops
except ImportError:  # the torch 2.13 and 2.15 compat environments have no torchvision
    tv_ops = None

ORACLES = ["reference"] + (["torchvision"] if tv_ops is not None else [])
OPS = ["roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool"]
H, W = 11, 13


def make_rois(n_images, scale, generator, dtype=torch.float64):
    """Boxes in image coordinates (feature map * 1/scale): random ones plus degenerate,
    negative-size, out-of-image, partly outside and border-touching ones."""
    ih, iw = H / scale, W / scale
    rand = torch.rand(6, 4, generator=generator, dtype=torch.float64)
    xy = rand[:, :2] * torch.tensor([iw, ih], dtype=torch.float64) * 0.8
    wh = (0.05 + rand[:, 2:] * 0.6) * torch.tensor([iw, ih], dtype=torch.float64)
    boxes = torch.cat([xy, xy + wh], dim=1)
    special = torch.tensor(
        [
            [0.3 * iw, 0.3 * ih, 0.3 * iw, 0.3 * ih],  # zero size
            [0.6 * iw, 0.5 * ih, 0.2 * iw, 0.1 * ih],  # negative size
            [1.5 * iw, 1.2 * ih, 2.0 * iw, 1.9 * ih],  # outside the image
            [-0.4 * iw, -0.3 * ih, 0.35 * iw, 0.4 * ih],  # partly outside
            [0.0, 0.0, iw, ih],  # the whole image, touching every border
            [0.5 * iw, 0.25 * ih, iw, ih],  # touching the bottom-right border
        ],
        dtype=torch.float64,
    )
    boxes = torch.cat([boxes, special])
    batch = torch.arange(boxes.shape[0]) % n_images
    return torch.cat([batch[:, None].to(torch.float64), boxes], dim=1).to(dtype)


def call(op, impl, x, rois, size, scale, sr, aligned):
    if impl == "reference":
        # The reference loops in Python over RoIs, bins and samples: for input on another
        # device it runs on CPU copies, differentiably, so gradients still reach `x`.
        if x.device.type != "cpu":
            cpu_rois = rois.cpu() if isinstance(rois, torch.Tensor) else [b.cpu() for b in rois]
            return call(op, impl, x.cpu(), cpu_rois, size, scale, sr, aligned).to(x.device)
        fn = roi_reference.REFERENCE[op]
        size = (size, size) if isinstance(size, int) else size
    elif impl == "torchvision":
        fn = getattr(tv_ops, op)
    else:
        fn = getattr(detops_roi, op)
    if op == "roi_align":
        return fn(x, rois, size, scale, sr, aligned)
    if op == "ps_roi_align":
        return fn(x, rois, size, scale, sr)
    return fn(x, rois, size, scale)


def channels(op, size):
    ph, pw = (size, size) if isinstance(size, int) else size
    return 2 * ph * pw if op.startswith("ps_") else 3


def _as_list(rois, n_images):
    return [rois[rois[:, 0] == i, 1:] for i in range(n_images)]


CASES = [
    # op, output_size, scale, sampling_ratio, aligned
    (op, size, scale, sr, aligned)
    for op in OPS
    for size, scale in (((2, 3), 1.0), (3, 0.25), (2, 1.0 / 16))
    for sr in ((-1, 0, 2) if "align" in op else (-1,))
    for aligned in ((False, True) if op == "roi_align" else (False,))
]


@pytest.mark.parametrize("oracle", ORACLES)
@pytest.mark.parametrize("op,size,scale,sr,aligned", CASES)
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
    ours = call(op, "detops", x1, rois, size, scale, sr, aligned)
    theirs = call(op, oracle, x2, rois, size, scale, sr, aligned)
    if op == "ps_roi_align" and oracle == "torchvision":
        # torchvision divides 0 by 0 for bins without samples (NaN); detops returns 0.
        theirs = torch.nan_to_num(theirs, nan=0.0)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    assert ours.device == x.device
    grad = torch.randn(ours.shape, generator=g, dtype=torch.float64).to(device)
    (g1,) = torch.autograd.grad(ours, x1, grad)
    (g2,) = torch.autograd.grad(call(op, oracle, x2, rois, size, scale, sr, aligned), x2, grad)
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("oracle", ORACLES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", ["list", "channels_last", "noncontiguous"])
@pytest.mark.parametrize("device", devices())
def test_layouts_and_box_formats(oracle, op, layout, device):
    g = torch.Generator().manual_seed(7)
    n, size, scale = 3, 2, 0.5
    x = torch.randn(n, channels(op, size), H, W, generator=g, dtype=torch.float64).to(device)
    rois = make_rois(n, scale, g).to(device)
    expected = call(op, oracle, x, rois, size, scale, 2, True)
    boxes = rois
    if layout == "list":
        order = torch.argsort(rois[:, 0], stable=True)
        expected = expected[order]
        boxes = _as_list(rois, n)
    elif layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    else:
        xt = torch.empty(n, x.shape[1], W, H, dtype=x.dtype, device=device).transpose(2, 3)
        xt.copy_(x)
        assert not xt.is_contiguous()
        x = xt
        boxes = rois.t().contiguous().t()  # non-contiguous rois too
    got = call(op, "detops", x, boxes, size, scale, 2, True)
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
    got = call(op, "detops", x, rois, 2, 0.5, 2, True)
    assert got.dtype == dtype
    if dtype == torch.float32:
        ref = call(op, "reference", x.double(), rois.double(), 2, 0.5, 2, True).float()
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    else:
        ref = call(op, "detops", x.float(), rois.float(), 2, 0.5, 2, True).to(dtype)
        torch.testing.assert_close(got, ref, rtol=0, atol=0) if op.endswith("pool") else torch.testing.assert_close(
            got.float(), ref.float(), rtol=1e-2, atol=1e-2
        )
    xg = x.clone().requires_grad_()
    out = call(op, "detops", xg, rois, 2, 0.5, 2, True)
    (grad,) = torch.autograd.grad(out, xg, torch.ones_like(out))
    assert grad.dtype == dtype
    xf = x.float().requires_grad_()
    out_f = call(op, "detops", xf, rois.float(), 2, 0.5, 2, True)
    (grad_f,) = torch.autograd.grad(out_f, xf, torch.ones_like(out_f))
    torch.testing.assert_close(grad.float(), grad_f, rtol=2e-2, atol=2e-2)
