"""detops-deform-attn: multi-scale deformable attention (Deformable DETR).

``multi_scale_deformable_attention`` and the ``MultiScaleDeformableAttention`` module run
native CPU and CUDA kernels registered as ``torch.ops.detops.multi_scale_deformable_attention``
(and ``torch.ops.detops._multi_scale_deformable_attention_backward`` for the gradients of
value, sampling locations and attention weights). They script with TorchScript, trace
under ``torch.compile(fullgraph=True)`` and ``torch.export`` (dynamic query and value
counts), and compute float16/bfloat16 inputs in float32.

Defined behaviour on unusual input:

- a location samples like ``grid_sample(mode="bilinear", padding_mode="zeros",
  align_corners=False)`` at ``2 * loc - 1``: neighbouring pixels outside the level count as
  zero, so locations outside ``[0, 1]`` sample zero once they are more than half a pixel
  past the border, and locations exactly on it sample the border pixels' share;
- a NaN or infinite location samples zero, with zero gradient for the location, the
  value and its attention weight; no memory outside the level is read or written. The
  sample is still multiplied by its attention weight, so a NaN or infinite weight makes
  the output NaN (as ordinary arithmetic, and the grid_sample reference, do);
- empty batch, queries, heads, points or head dimension give empty or zero results;
- malformed arguments raise ``RuntimeError`` naming the argument: shapes that do not
  match each other, a ``value_spatial_shapes`` that is not ``[L, 2]`` int64, a
  ``value_level_start_index`` that is not ``[L]`` int64, mismatched dtypes or devices;
- level tables that do not describe ``value`` (a level of zero or negative height or width,
  or of 2^31 pixels or more, ``value.shape[1] != sum(height * width)``, a
  ``value_level_start_index`` that is not the exclusive cumulative sum of the level sizes)
  raise ``RuntimeError`` naming the entry on the CPU. On CUDA they make every element of the
  output and of the gradients NaN: the CUDA kernels never read device data on the host
  (that would wait for the GPU), so the level table is built and checked on the device.
  ``value_spatial_shapes`` and ``value_level_start_index`` may be on the GPU or the CPU
  (copied to the GPU without waiting for it).
"""

from typing import Optional

import torch
from torch import Tensor

from . import _registrations  # noqa: F401  (fake kernels, autograd and autocast)
from ._library import build_info
from .module import MultiScaleDeformableAttention

__all__ = ["multi_scale_deformable_attention", "MultiScaleDeformableAttention", "build_info"]
__version__ = __import__("importlib.metadata").metadata.version("detops-deform-attn")


def multi_scale_deformable_attention(
    value: Tensor,
    value_spatial_shapes: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    value_level_start_index: Optional[Tensor] = None,
) -> Tensor:
    """Multi-scale deformable attention (Zhu et al., Deformable DETR, 2021).

    For each image ``b``, query ``q`` and head ``h``::

        out[b, q, h] = sum over levels l and points p of
            attention_weights[b, q, h, l, p]
            * bilinear(value of level l, head h, at sampling_locations[b, q, h, l, p])

    where level ``l`` is rows ``start_l .. start_l + H_l * W_l`` of ``value`` read as an
    ``H_l x W_l`` map, and bilinear sampling is ``grid_sample(mode="bilinear",
    padding_mode="zeros", align_corners=False)`` at ``2 * loc - 1`` (pixel coordinates
    ``x * W_l - 0.5``, ``y * H_l - 0.5``).

    Args:
        value (Tensor[B, S, H, D]): the flattened multi-level feature maps, split in heads;
            float16, bfloat16 (both computed in float32), float32 or float64.
            ``sampling_locations`` and ``attention_weights`` must have its dtype and device.
        value_spatial_shapes (Tensor[L, 2], int64): (height, width) of each level, with
            ``S = sum(height * width)``.
        sampling_locations (Tensor[B, Q, H, L, P, 2]): normalised (x, y) locations, (0, 0)
            the top-left corner of a level and (1, 1) its bottom-right corner.
        attention_weights (Tensor[B, Q, H, L, P]): the weight of each sample.
        value_level_start_index (Tensor[L], int64, optional): first row of each level in
            ``value``; computed from ``value_spatial_shapes`` when omitted, checked against
            it when given.

    Returns:
        Tensor[B, Q, H * D], in ``value``'s dtype.

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward (gradients of
    value, sampling locations and attention weights); on CUDA, level tables that do not
    describe ``value`` give NaN instead of the CPU's RuntimeError. The forward and the CPU
    backward are repeatable (bitwise identical on every run); on CUDA the value gradient
    adds with float atomics unless ``torch.use_deterministic_algorithms(True)`` is set,
    which selects a repeatable fixed-point sum. Exports to ONNX as, per level, ``Slice`` +
    ``GridSample`` (bilinear, zeros, ``align_corners=0``) and a weighted ``ReduceSum``:
    dynamic Q, S and level sizes, a static level count, ``value_level_start_index``
    unused; matches eager to float rounding.
    """
    return torch.ops.detops.multi_scale_deformable_attention(
        value, value_spatial_shapes, sampling_locations, attention_weights, value_level_start_index
    )
