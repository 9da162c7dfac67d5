"""fpn_upsample_add's definition, registered as its oracle (torchvision has no such op), and
the upsample cases the CPU, CUDA and emulated-CUDA tests share."""

import torch
import torch.nn.functional as F

import detops_fpn
from detops_core.testing import register_op


def upsample_add_reference(top, lateral):
    return lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")


register_op(
    "fpn_upsample_add",
    detops=detops_fpn.fpn_upsample_add,
    reference=upsample_add_reference,
    torchvision="",
    reference_on_cpu=False,
)

# (top height, top width, lateral height, lateral width): upsampling by 2, by other integer
# and fractional factors, downsampling, 1 x 1 tops, an FPN's real sizes, and equal sizes.
UPSAMPLE_SIZES = [
    (5, 7, 10, 14),
    (3, 3, 7, 9),
    (7, 9, 5, 4),
    (1, 1, 6, 6),
    (25, 38, 50, 76),
    (13, 19, 25, 38),
    (4, 4, 4, 4),
]


def upsample_case(th, tw, oh, ow, dtype, channels=3, channels_last=False):
    """top [2, channels, th, tw], lateral and a gradient [2, channels, oh, ow], on the CPU."""
    g = torch.Generator().manual_seed(th * 100 + ow)
    top = torch.randn(2, channels, th, tw, generator=g).to(dtype)
    lateral = torch.randn(2, channels, oh, ow, generator=g).to(dtype)
    grad = torch.randn(2, channels, oh, ow, generator=g).to(dtype)
    if channels_last:
        top, lateral = (t.to(memory_format=torch.channels_last) for t in (top, lateral))
    return top, lateral, grad
