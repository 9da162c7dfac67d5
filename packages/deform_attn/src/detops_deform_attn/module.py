"""The MultiScaleDeformableAttention layer: value, sampling-offset and attention-weight
projections around the native op, initialised as in Deformable DETR."""

import math
from typing import Optional

import torch
from torch import Tensor, nn

from . import _registrations  # noqa: F401  (the op's fake kernels, autograd and autocast)


class MultiScaleDeformableAttention(nn.Module):
    """Multi-scale deformable attention layer (Deformable DETR's ``MSDeformAttn``).

    Args:
        embed_dim (int): channels of queries, values and the output; divisible by
            ``num_heads``.
        num_heads (int): attention heads; each attends with ``embed_dim // num_heads``
            channels.
        num_levels (int): feature levels sampled.
        num_points (int): sampling points per head and level.

    Layers: ``value_proj`` and ``output_proj`` (``embed_dim -> embed_dim``),
    ``sampling_offsets`` (``embed_dim -> num_heads * num_levels * num_points * 2``) and
    ``attention_weights`` (``embed_dim -> num_heads * num_levels * num_points``, softmax
    over levels and points). Initialisation as in Deformable DETR: zero offset weights with
    a bias that starts head ``h``'s point ``p`` at ``(p + 1)`` pixels of the level in
    direction ``2 pi h / num_heads`` (scaled so the larger coordinate is ``p + 1``); zero
    attention weights and bias (uniform attention); Xavier-uniform projections with zero
    bias.

    Devices, determinism, ONNX: the projections are ``torch.nn.Linear`` layers (any device,
    any floating dtype torch supports); the sampling is
    :func:`multi_scale_deformable_attention` (CPU and CUDA kernels; its CUDA value gradient
    is repeatable only under ``torch.use_deterministic_algorithms(True)``, with torch's own
    rules for the Linear layers). The layer exports to ONNX with the op's ``GridSample``
    translation and torch's own export of the rest.
    """

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, num_levels: int = 4, num_points: int = 4):
        super().__init__()
        for name, v in (
            ("embed_dim", embed_dim),
            ("num_heads", num_heads),
            ("num_levels", num_levels),
            ("num_points", num_points),
        ):
            if v <= 0:
                raise ValueError(f"MultiScaleDeformableAttention: {name} must be a positive integer, got {v}")
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"MultiScaleDeformableAttention: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        samples = num_heads * num_levels * num_points
        self.sampling_offsets = nn.Linear(embed_dim, samples * 2)
        self.attention_weights = nn.Linear(embed_dim, samples)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        angle = torch.arange(self.num_heads, dtype=torch.float64) * (2.0 * math.pi / self.num_heads)
        direction = torch.stack([angle.cos(), angle.sin()], -1)
        direction = direction / direction.abs().max(-1, keepdim=True).values
        steps = torch.arange(1, self.num_points + 1, dtype=torch.float64).view(1, 1, -1, 1)
        bias = direction.view(self.num_heads, 1, 1, 2) * steps  # [H, 1, P, 2]
        bias = bias.expand(self.num_heads, self.num_levels, self.num_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        value_spatial_shapes: Tensor,
        value_level_start_index: Optional[Tensor] = None,
        value_padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """
        Args:
            query (Tensor[B, Q, embed_dim]): the queries (with their positional embedding
                added, as in Deformable DETR).
            reference_points (Tensor[B, Q, num_levels, 2] or Tensor[B, Q, num_levels, 4]):
                normalised (x, y) reference points per level, offsets then being in pixels
                of each level; or (cx, cy, w, h) boxes, offsets then being fractions of half
                the box size divided by num_points.
            value (Tensor[B, S, embed_dim]): the flattened feature maps of all levels.
            value_spatial_shapes (Tensor[num_levels, 2], int64): (height, width) per level,
                ``S = sum(height * width)``.
            value_level_start_index (Tensor[num_levels], int64, optional): first row of each
                level in ``value`` (checked when given).
            value_padding_mask (Tensor[B, S], bool, optional): True where ``value`` is
                padding; those values are zeroed after the projection.

        Returns:
            Tensor[B, Q, embed_dim]
        """
        batch, num_queries, _ = query.shape
        num_values = value.shape[1]
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        if value_spatial_shapes.shape[0] != levels:
            raise ValueError(
                f"MultiScaleDeformableAttention: value_spatial_shapes has {value_spatial_shapes.shape[0]} levels, "
                f"the layer was built for num_levels={levels}"
            )
        value = self.value_proj(value)
        if value_padding_mask is not None:
            value = value.masked_fill(value_padding_mask[..., None], 0.0)
        value = value.view(batch, num_values, heads, self.embed_dim // heads)
        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, num_queries, heads, levels, points)
        if reference_points.shape[-1] == 2:
            # Offsets are in pixels of each level: divide by its (width, height).
            size = torch.stack([value_spatial_shapes[:, 1], value_spatial_shapes[:, 0]], -1).to(offsets.dtype)
            locations = reference_points[:, :, None, :, None, :] + offsets / size[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            centre = reference_points[:, :, None, :, None, :2]
            box = reference_points[:, :, None, :, None, 2:]
            locations = centre + offsets / points * box * 0.5
        else:
            raise ValueError(
                "MultiScaleDeformableAttention: reference_points must end in 2 (x, y) or 4 (cx, cy, w, h), "
                f"got shape {list(reference_points.shape)}"
            )
        out = torch.ops.detops.multi_scale_deformable_attention(
            value, value_spatial_shapes, locations, weights, value_level_start_index
        )
        return self.output_proj(out)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"num_levels={self.num_levels}, num_points={self.num_points}"
        )
