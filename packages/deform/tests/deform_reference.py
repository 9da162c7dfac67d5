"""A small, obviously-correct pure-PyTorch deform_conv2d, registered as the oracle that is
always available (torchvision joins it where installed), and the cases the tests share.

Sampling follows torchvision's rules: a tap at (y, x) reads zero unless -1 < y < H and
-1 < x < W; inside, each of the four neighbours contributes its bilinear weight times its
value, neighbours outside the image counting as zero. Non-finite positions read zero.
Gradients come from autograd through this code.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

import detops_deform
from detops_core.testing import register_op


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def reference_deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride=(1, 1),
    padding=(0, 0),
    dilation=(1, 1),
    mask: Optional[Tensor] = None,
) -> Tensor:
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    B, C, H, W = input.shape
    out_channels, Cg, kh, kw = weight.shape
    K = kh * kw
    groups = C // Cg
    og = offset.shape[1] // (2 * K)
    oh, ow = offset.shape[2], offset.shape[3]
    P = oh * ow
    dev = input.device

    # Sampling positions [B, og, K, P].
    ki = torch.arange(kh, device=dev).repeat_interleave(kw)  # kernel row of tap k
    kj = torch.arange(kw, device=dev).repeat(kh)  # kernel column of tap k
    oy = torch.arange(oh, device=dev).repeat_interleave(ow)
    ox = torch.arange(ow, device=dev).repeat(oh)
    base_y = (oy[None, :] * sh - ph + ki[:, None] * dh).to(input.dtype)
    base_x = (ox[None, :] * sw - pw + kj[:, None] * dw).to(input.dtype)
    off = offset.reshape(B, og, K, 2, P)
    y = base_y + off[:, :, :, 0]
    x = base_x + off[:, :, :, 1]

    inside = (y > -1) & (y < H) & (x > -1) & (x < W)  # False for NaN and infinities
    y = torch.where(inside, y, torch.zeros_like(y))
    x = torch.where(inside, x, torch.zeros_like(x))
    y0 = torch.floor(y.detach())
    x0 = torch.floor(x.detach())
    ly, lx = y - y0, x - x0
    y0, x0 = y0.long(), x0.long()

    cpg = C // og
    flat = input.reshape(B, C, H * W)
    col = input.new_zeros(B, C, K * P)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            valid = inside & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            idx = (yy.clamp(0, H - 1) * W + xx.clamp(0, W - 1)).reshape(B, og, K * P)
            v = torch.gather(flat, 2, idx.repeat_interleave(cpg, dim=1))
            wgt = (ly if dy else 1 - ly) * (lx if dx else 1 - lx)
            wgt = torch.where(valid, wgt, torch.zeros_like(wgt)).reshape(B, og, K * P)
            col = col + wgt.repeat_interleave(cpg, dim=1) * torch.where(
                valid.reshape(B, og, K * P).repeat_interleave(cpg, dim=1), v, torch.zeros_like(v)
            )
    if mask is not None:
        col = col * mask.reshape(B, og, K * P).repeat_interleave(cpg, dim=1)
    col = col.reshape(B, groups, Cg * K, P)
    out = torch.einsum("gok,bgkp->bgop", weight.reshape(groups, out_channels // groups, Cg * K), col)
    out = out.reshape(B, out_channels, oh, ow)
    if bias is not None:
        out = out + bias[None, :, None, None]
    return out


# The reference is vectorised torch code: it runs on the device of its arguments.
register_op(
    "deform_conv2d", detops=detops_deform.deform_conv2d, reference=reference_deform_conv2d, reference_on_cpu=False
)


def output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def make_case(
    batch=2,
    in_channels=4,
    size=(7, 6),
    out_channels=6,
    kernel=(3, 3),
    groups=1,
    offset_groups=1,
    stride=(1, 1),
    padding=(1, 1),
    dilation=(1, 1),
    use_mask=True,
    use_bias=True,
    dtype=torch.float64,
    offset_scale=2.0,
    seed=0,
):
    """Random arguments (a dict for deform_conv2d) of one configuration."""
    g = torch.Generator().manual_seed(seed)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    H, W = size
    oh, ow = output_size(H, kh, sh, ph, dh), output_size(W, kw, sw, pw, dw)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    args = dict(
        input=rnd(batch, in_channels, H, W),
        offset=rnd(batch, 2 * offset_groups * kh * kw, oh, ow, scale=offset_scale),
        weight=rnd(out_channels, in_channels // groups, kh, kw),
        bias=rnd(out_channels) if use_bias else None,
        stride=stride,
        padding=padding,
        dilation=dilation,
        mask=torch.rand(batch, offset_groups * kh * kw, oh, ow, generator=g, dtype=torch.float64).to(dtype)
        if use_mask
        else None,
    )
    return args


TENSOR_ARGS = ("input", "offset", "weight", "bias", "mask")

# (name, make_case kwargs) that both the differential tests and the emulated CUDA kernels
# run: groups, offset groups, stride / padding / dilation, non-square kernels, with and
# without mask and bias, batch 1, far-reaching offsets. Each adds its own large batch.
CONFIGS = [
    ("basic", dict()),
    ("no_mask", dict(use_mask=False)),
    ("no_bias_no_mask", dict(use_mask=False, use_bias=False)),
    ("groups2", dict(in_channels=4, out_channels=6, groups=2)),
    ("offset_groups2", dict(in_channels=4, offset_groups=2)),
    ("groups2_offset_groups4", dict(in_channels=8, out_channels=4, groups=2, offset_groups=4)),
    ("stride2", dict(size=(9, 8), stride=(2, 2), padding=(0, 0))),
    ("stride_pad_dil_mixed", dict(size=(10, 9), stride=(2, 1), padding=(2, 0), dilation=(1, 2))),
    ("kernel_1x3", dict(kernel=(1, 3), padding=(0, 1))),
    ("kernel_3x2_dil2", dict(kernel=(3, 2), dilation=(2, 2), padding=(1, 1), size=(8, 7))),
    ("kernel_1x1", dict(kernel=(1, 1), padding=(0, 0))),
    ("batch1", dict(batch=1, in_channels=3, out_channels=5)),
    ("large_offsets", dict(offset_scale=8.0)),
    ("depthwise", dict(in_channels=4, out_channels=4, groups=4, offset_groups=2)),
]


def op_args(args) -> tuple:
    """make_case's arguments in the order of torch.ops.detops.deform_conv2d's schema."""
    s, p, d = args["stride"], args["padding"], args["dilation"]
    return (args["input"], args["offset"], args["weight"], args["bias"], args["mask"], *s, *p, *d)
