"""roi_align_rotated (issue 15) on the Mask R-CNN P2 workload of bench_roi.py (feature map
2x256x200x304, scale 1/4, 512 proposal-like boxes given angles in [-45, 45), 7x7 bins,
sampling_ratio 2, aligned), see tools/bench.py. torchvision has no rotated RoI Align, so the
baselines are named: a vectorised pure-PyTorch sampler (sample positions for all RoIs at
once, four gathers, a mean), and at r = 0 detops' roi_align on the same boxes (the cost of
rotation). Forward and forward+backward."""

import importlib.util
import os

import torch

import detops_roi
from detops_core.testing import deterministically

# tools/bench.py loads each bench file by path: the shared workload comes the same way.
_spec = importlib.util.spec_from_file_location("bench_roi", os.path.join(os.path.dirname(__file__), "bench_roi.py"))
_bench_roi = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench_roi)
IMAGE_H, IMAGE_W, SCALE, proposals = _bench_roi.IMAGE_H, _bench_roi.IMAGE_W, _bench_roi.SCALE, _bench_roi.proposals


def torch_roi_align_rotated(x, rois, size: int, scale: float, sampling_ratio: int):
    """Aligned roi_align_rotated with a fixed sampling_ratio, in tensor operations."""
    n, c, h, w = x.shape
    k, g = rois.shape[0], sampling_ratio
    b = rois[:, 0].long()
    cx, cy = rois[:, 1] * scale - 0.5, rois[:, 2] * scale - 0.5
    bw, bh = rois[:, 3] * scale, rois[:, 4] * scale
    rad = rois[:, 5] * (torch.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    steps = (torch.arange(size * g, dtype=x.dtype, device=x.device) + 0.5) / (size * g) - 0.5  # [-0.5, 0.5)
    yy = steps[None, :, None] * bh[:, None, None]  # [K, size*g, 1]
    xx = steps[None, None, :] * bw[:, None, None]  # [K, 1, size*g]
    px = cx[:, None, None] + xx * cos[:, None, None] + yy * sin[:, None, None]
    py = cy[:, None, None] - xx * sin[:, None, None] + yy * cos[:, None, None]
    valid = (py >= -1) & (py <= h) & (px >= -1) & (px <= w)
    py, px = py.clamp(min=0), px.clamp(min=0)
    y0, x0 = py.floor().clamp(max=h - 1), px.floor().clamp(max=w - 1)
    py, px = torch.where(y0 >= h - 1, y0, py), torch.where(x0 >= w - 1, x0, px)
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    ly, lx = py - y0, px - x0
    # Pixels as rows [N*H*W, C]: each tap is one row lookup for all channels at once.
    pixels = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    base = (b * (h * w))[:, None, None]

    def at(yi, xi):
        return pixels.index_select(0, (base + yi.long() * w + xi.long()).reshape(-1)).reshape(k, size * g, size * g, c)

    v = (
        ((1 - ly) * (1 - lx) * valid)[..., None] * at(y0, x0)
        + ((1 - ly) * lx * valid)[..., None] * at(y0, x1)
        + (ly * (1 - lx) * valid)[..., None] * at(y1, x0)
        + (ly * lx * valid)[..., None] * at(y1, x1)
    ).permute(0, 3, 1, 2)
    return v.reshape(k, c, size, g, size, g).mean((3, 5))


def _fwd_bwd(fn, x, grad):
    def run():
        torch.autograd.grad(fn(x), x, grad)

    return run


def cases(quick: bool, device: str = "cpu"):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64 if quick else 256, IMAGE_H // 4, IMAGE_W // 4, generator=g).to(device)
    k = 128 if quick else 512
    xyxy = proposals(k).to(device)
    b, x1, y1, x2, y2 = xyxy.unbind(1)
    angles = (torch.rand(k, generator=g) * 90 - 45).to(device)
    rotated = torch.stack((b, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, angles), 1)
    flat = rotated.clone()
    flat[:, 5] = 0
    ours = lambda t, r=rotated: detops_roi.roi_align_rotated(t, r, 7, SCALE, 2, True)  # noqa: E731
    theirs = lambda t, r=rotated: torch_roi_align_rotated(t, r, 7, SCALE, 2)  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)
    work = f"{k} rois, 7x7, sr 2, angles in [-45, 45)"
    base = "vectorised PyTorch sampler"
    yield ("roi_align_rotated", work, lambda: ours(x), lambda: theirs(x), base)
    xg = x.detach().clone().requires_grad_()
    grad = torch.randn(k, x.shape[1], 7, 7, generator=g).to(device)
    yield ("roi_align_rotated fwd+backward", work, _fwd_bwd(ours, xg, grad), _fwd_bwd(theirs, xg, grad), base)
    if x.is_cuda:  # what torch.use_deterministic_algorithms costs (the fixed-point backward)
        ours_fb = _fwd_bwd(ours, xg, grad)
        yield (
            "roi_align_rotated fwd+backward deterministic",
            work,
            deterministically(ours_fb),
            ours_fb,
            "detops atomics",
        )
    flat_ours = lambda t: detops_roi.roi_align_rotated(t, flat, 7, SCALE, 2, True)  # noqa: E731
    axis = lambda t: detops_roi.roi_align(t, xyxy, 7, SCALE, 2, True)  # noqa: E731
    work0 = f"{k} rois, 7x7, sr 2, r = 0"
    yield ("roi_align_rotated r=0", work0, lambda: flat_ours(x), lambda: axis(x), "detops roi_align")
    yield (
        "roi_align_rotated r=0 fwd+backward",
        work0,
        _fwd_bwd(flat_ours, xg, grad),
        _fwd_bwd(axis, xg, grad),
        "detops roi_align",
    )
