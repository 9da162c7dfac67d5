"""multi_scale_deformable_attention against the pure-PyTorch grid_sample reference (what
CPU users of Deformable DETR, mmcv and transformers fall back to) at Deformable DETR's
encoder size: batch 2, 4 levels of an 800x1216 image at strides 8, 16, 32 and 64
(100x152, 50x76, 25x38, 13x19: S = 20197 values), 8 heads of 32 channels, 4 points,
Q = S queries. Forward and forward+backward (gradients of value, locations, weights).

A third case per workload compares the forward with a copy of as many bytes as it must
move at least (read value, locations and weights once, write the output once): its
"speed-up" is the fraction of copy bandwidth the kernel reaches."""

import math
import os
import sys

import torch

import detops_deform_attn
from detops_core.testing import deterministically

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))
from deform_attn_reference import reference_msda  # noqa: E402

ENCODER = ("Deformable DETR encoder, B2 800x1216 s8-64, 8x32, P4, Q=S", 2, ((100, 152), (50, 76), (25, 38), (13, 19)))
QUICK = ("B1 two levels 20x24 + 10x12, 8x32, P4, Q=S", 1, ((20, 24), (10, 12)))
HEADS, HEAD_DIM, POINTS = 8, 32, 4


def _inputs(batch, shapes, seed=0):
    """As in the encoder: query i sits at the centre of value position i (row-major over the
    levels) and samples every level around that point, point p of head h at about p + 1
    pixels of the level in direction 2 pi h / HEADS (Deformable DETR's initial offsets)
    plus one pixel of noise."""
    g = torch.Generator().manual_seed(seed)
    spatial = torch.tensor(shapes, dtype=torch.int64)
    levels = len(shapes)
    centres = []
    for h, w in shapes:
        y, x = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        centres.append(torch.stack([x.reshape(-1), y.reshape(-1)], -1))
    ref = torch.cat(centres)  # [Q, 2]
    queries = ref.shape[0]
    angle = torch.arange(HEADS) * (2 * math.pi / HEADS)
    direction = torch.stack([angle.cos(), angle.sin()], -1)
    direction = direction / direction.abs().max(-1, keepdim=True).values
    steps = torch.arange(1, POINTS + 1).view(1, POINTS, 1)
    pixels = direction.view(HEADS, 1, 1, 2) * steps  # [H, 1, P, 2] -> per level below
    offsets = pixels.expand(HEADS, levels, POINTS, 2) + torch.randn(
        batch, queries, HEADS, levels, POINTS, 2, generator=g
    )
    size = spatial.flip(-1).to(torch.float32).view(1, 1, 1, levels, 1, 2)  # (width, height)
    loc = ref.view(1, queries, 1, 1, 1, 2) + offsets / size
    value = torch.randn(batch, queries, HEADS, HEAD_DIM, generator=g)
    attn = torch.rand(batch, queries, HEADS, levels * POINTS, generator=g).softmax(-1)
    return value, spatial, loc.contiguous(), attn.view(batch, queries, HEADS, levels, POINTS)


def _forward(fn, args):
    return lambda: fn(*args)


def _forward_backward(fn, args):
    value, spatial, loc, attn = (t.clone().requires_grad_() if t.is_floating_point() else t for t in args)
    grad = torch.randn(value.shape[0], loc.shape[1], HEADS * HEAD_DIM).to(value.device)

    def run():
        out = fn(value, spatial, loc, attn)
        return torch.autograd.grad(out, [value, loc, attn], grad)

    return run


def _copy_of_bytes_moved(args):
    value, _, loc, attn = args
    nbytes = (value.numel() * 2 + loc.numel() + attn.numel()) * value.element_size()  # output = value's size
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=value.device).fill_(1.0)
    dst = torch.empty_like(src)
    return nbytes, lambda: dst.copy_(src)


def cases(quick: bool, device: str = "cpu"):
    label, batch, shapes = QUICK if quick else ENCODER
    args = tuple(t.to(device) for t in _inputs(batch, shapes))
    ours = _forward(detops_deform_attn.multi_scale_deformable_attention, args)
    theirs = _forward(reference_msda, args)
    torch.testing.assert_close(ours(), theirs(), rtol=1e-4, atol=1e-4)
    yield ("multi_scale_deformable_attention", label, ours, theirs, "grid_sample reference")
    ours_fb = _forward_backward(detops_deform_attn.multi_scale_deformable_attention, args)
    theirs_fb = _forward_backward(reference_msda, args)
    yield ("multi_scale_deformable_attention forward+backward", label, ours_fb, theirs_fb, "grid_sample reference")
    if device == "cuda":  # what torch.use_deterministic_algorithms costs (the fixed-point backward)
        det = deterministically(ours_fb)
        yield ("multi_scale_deformable_attention forward+backward deterministic", label, det, ours_fb, "detops atomics")
    nbytes, copy = _copy_of_bytes_moved(args)
    yield (
        "multi_scale_deformable_attention",
        f"{label}; {nbytes / 2**20:.0f} MiB moved",
        ours,
        copy,
        "copy of the bytes moved",
    )
