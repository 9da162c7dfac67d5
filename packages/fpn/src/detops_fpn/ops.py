"""Functional form of the fused FPN top-down step."""

import torch
from torch import Tensor

from . import _registrations  # noqa: F401  (fake kernels and autograd)


def fpn_upsample_add(top: Tensor, lateral: Tensor) -> Tensor:
    """``lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")`` in one pass.

    Args:
        top (Tensor[N, C, h, w]): the coarser map.
        lateral (Tensor[N, C, H, W]): the lateral map; the result has its shape.

    Returns:
        Tensor[N, C, H, W]: in the common dtype of ``top`` and ``lateral``.

    Both must be floating-point (float16, bfloat16, float32 or float64) on one device;
    mixed floating dtypes are promoted as ``lateral + upsampled`` would be.

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward, with identical
    results on both; forward and backward are repeatable (bitwise identical on every run)
    everywhere. Exports to ONNX as ``Gather`` + ``Gather`` + ``Add``, bitwise equal to
    eager (the nearest indices computed as the kernels compute them).
    """
    if top.dtype != lateral.dtype:
        common = torch.promote_types(top.dtype, lateral.dtype)
        top = top.to(common)
        lateral = lateral.to(common)
    return torch.ops.detops.fpn_upsample_add(top, lateral)
