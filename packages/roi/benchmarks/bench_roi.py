"""The four RoI ops against torchvision on the Mask R-CNN P2 workload (see tools/bench.py):
feature map 2x256x200x304 (an 800x1216 image at stride 4, scale 1/4), 512 and 2000
proposal-like boxes, 7x7 and 14x14 bins, sampling_ratio 2 and -1, aligned. The ps_* ops
need channels divisible by the bin count: they use 245 (7x7) and 196 (14x14) channels.
Inputs are made on the CPU, then moved to `device`: the same workload everywhere."""

import math

import torch
import torchvision

import detops_roi
from detops_core.testing import deterministically

IMAGE_H, IMAGE_W, SCALE = 800, 1216, 0.25


def proposals(k: int, n_images: int = 2, seed: int = 0) -> torch.Tensor:
    """Tensor[k, 5]: boxes with log-uniform sides of 16 to 320 pixels, clipped to the image,
    spread over the images."""
    g = torch.Generator().manual_seed(seed)
    sides = torch.exp(torch.empty(k, 2).uniform_(math.log(16.0), math.log(320.0), generator=g))
    centres = torch.rand(k, 2, generator=g) * torch.tensor([IMAGE_W, IMAGE_H])
    boxes = torch.cat([centres - sides / 2, centres + sides / 2], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, IMAGE_W)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, IMAGE_H)
    batch = torch.randint(0, n_images, (k, 1), generator=g).float()
    return torch.cat([batch, boxes], dim=1)


def _fwd_bwd(fn, x, grad):
    def run():
        out = fn(x)
        torch.autograd.grad(out, x, grad)

    return run


def _pair(name, ours, theirs, x, workload, check_tol):
    with torch.no_grad():
        a, b = ours(x), theirs(x)
        torch.testing.assert_close(a, torch.nan_to_num(b), rtol=check_tol, atol=check_tol)
    yield (name, workload, lambda: ours(x), lambda: theirs(x))
    xg = x.detach().clone().requires_grad_()
    grad = torch.randn(a.shape, generator=torch.Generator().manual_seed(1)).to(a.device)
    yield (f"{name} fwd+backward", workload, _fwd_bwd(ours, xg, grad), _fwd_bwd(theirs, xg, grad))
    if x.is_cuda:  # what torch.use_deterministic_algorithms costs (the fixed-point backward)
        ours_fb = _fwd_bwd(ours, xg, grad)
        yield (f"{name} fwd+backward deterministic", workload, deterministically(ours_fb), ours_fb, "detops atomics")


def _ops():
    """name -> (detops fn, torchvision fn, takes sampling_ratio, position-sensitive);
    each fn(features, rois, size, sampling_ratio)."""
    tv = torchvision.ops
    return {
        "roi_align": (
            lambda t, r, s, q: detops_roi.roi_align(t, r, s, SCALE, q, True),
            lambda t, r, s, q: tv.roi_align(t, r, s, SCALE, q, True),
            True,
            False,
        ),
        "roi_pool": (
            lambda t, r, s, q: detops_roi.roi_pool(t, r, s, SCALE),
            lambda t, r, s, q: tv.roi_pool(t, r, s, SCALE),
            False,
            False,
        ),
        "ps_roi_align": (
            lambda t, r, s, q: detops_roi.ps_roi_align(t, r, s, SCALE, q),
            lambda t, r, s, q: tv.ps_roi_align(t, r, s, SCALE, q),
            True,
            True,
        ),
        "ps_roi_pool": (
            lambda t, r, s, q: detops_roi.ps_roi_pool(t, r, s, SCALE),
            lambda t, r, s, q: tv.ps_roi_pool(t, r, s, SCALE),
            False,
            True,
        ),
    }


def cases(quick: bool, device: str = "cpu"):
    counts = (64,) if quick else (512, 2000)
    sizes = (7,) if quick else (7, 14)
    g = torch.Generator().manual_seed(0)
    shape = (2, 64, 200, 304) if quick else (2, 256, 200, 304)
    features = torch.randn(shape, generator=g).to(device)
    for k in counts:
        rois = proposals(k).to(device)
        for size in sizes:
            for name, (ours, theirs, sampled, ps) in _ops().items():
                x = features[:, : (shape[1] // (size * size)) * size * size].contiguous() if ps else features
                for sr in (2, -1) if sampled else (0,):
                    workload = f"{k} rois, {size}x{size}" + (f", sr {sr}" if sampled else "")
                    workload += f", C={x.shape[1]}" if ps else ""
                    yield from _pair(
                        name,
                        lambda t, r=rois, s=size, q=sr, f=ours: f(t, r, s, q),
                        lambda t, r=rois, s=size, q=sr, f=theirs: f(t, r, s, q),
                        x,
                        workload,
                        0.0 if name == "roi_pool" else 1e-4,
                    )
