"""deform_conv2d against torchvision on the issue's workloads (see tools/bench.py):
2x64x64x64 (3x3, 64->64, pad 1) with and without mask, and 1x256x50x76 (256->256, mask),
forward and forward+backward (gradients of input, offset, mask, weight and bias).
Inputs are made on the CPU, then moved to `device`: the same workload everywhere."""

import torch
import torchvision

import detops_deform
from detops_core.testing import deterministically

WORKLOADS = [
    # (label, batch, channels, height, width, use_mask)
    ("2x64x64x64 3x3 64->64 pad 1, mask", 2, 64, 64, 64, True),
    ("2x64x64x64 3x3 64->64 pad 1, no mask", 2, 64, 64, 64, False),
    ("1x256x50x76 3x3 256->256 pad 1, mask", 1, 256, 50, 76, True),
]
QUICK = [("1x16x20x20 3x3 16->16 pad 1, mask", 1, 16, 20, 20, True)]


def _inputs(batch, channels, height, width, use_mask, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=g)
    offset = 2 * torch.randn(batch, 18, height, width, generator=g)
    mask = torch.rand(batch, 9, height, width, generator=g) if use_mask else None
    weight = torch.randn(channels, channels, 3, 3, generator=g) / (3 * channels**0.5)
    bias = torch.randn(channels, generator=g)
    return x, offset, weight, bias, mask


def _forward(fn, args):
    x, offset, weight, bias, mask = args
    return lambda: fn(x, offset, weight, bias, padding=(1, 1), mask=mask)


def _forward_backward(fn, args):
    leaves = [t.clone().requires_grad_() if t is not None else None for t in args]
    x, offset, weight, bias, mask = leaves
    grad = torch.randn(x.shape[0], weight.shape[0], x.shape[2], x.shape[3]).to(x.device)

    def run():
        out = fn(x, offset, weight, bias, padding=(1, 1), mask=mask)
        return torch.autograd.grad(out, [t for t in leaves if t is not None], grad)

    return run


def cases(quick: bool, device: str = "cpu"):
    for label, b, c, h, w, use_mask in QUICK if quick else WORKLOADS:
        args = tuple(t.to(device) if t is not None else None for t in _inputs(b, c, h, w, use_mask))
        ours, theirs = _forward(detops_deform.deform_conv2d, args), _forward(torchvision.ops.deform_conv2d, args)
        torch.testing.assert_close(ours(), theirs(), rtol=1e-3, atol=1e-3)
        yield ("deform_conv2d", label, ours, theirs)
        ours_fb = _forward_backward(detops_deform.deform_conv2d, args)
        theirs_fb = _forward_backward(torchvision.ops.deform_conv2d, args)
        yield ("deform_conv2d forward+backward", label, ours_fb, theirs_fb)
        if device == "cuda":  # what torch.use_deterministic_algorithms costs (the fixed-point backward)
            yield (
                "deform_conv2d forward+backward deterministic",
                label,
                deterministically(ours_fb),
                ours_fb,
                "detops atomics",
            )
