"""A pure-PyTorch multi-scale deformable attention written from the definition (one
grid_sample per level), the test oracle, and the random cases the tests share.

For each level l, value rows [start_l, start_l + H_l * W_l) are the H_l x W_l map of every
head; grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False) samples it at
2 * loc - 1 for every (query, point); the samples are weighted by attention_weights and
summed over levels and points. Gradients come from autograd through this code.
"""

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

import detops_deform_attn
from detops_core.testing import register_op

# The op's tensor arguments, in order: the keys of make_case's dict that tests pass on.
NAMES = ("value", "value_spatial_shapes", "sampling_locations", "attention_weights")


def reference_msda(
    value: Tensor,
    value_spatial_shapes: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    value_level_start_index: Optional[Tensor] = None,
) -> Tensor:
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    sizes: List[List[int]] = value_spatial_shapes.tolist()
    maps = value.split([h * w for h, w in sizes], dim=1)
    samples = []
    for level, (h, w) in enumerate(sizes):
        # [B, h * w, H, D] -> [B * H, D, h, w]
        image = maps[level].permute(0, 2, 3, 1).reshape(batch * heads, head_dim, h, w)
        # [B, Q, H, P, 2] -> [B * H, Q, P, 2]
        grid = 2 * sampling_locations[:, :, :, level] - 1
        grid = grid.transpose(1, 2).reshape(batch * heads, queries, points, 2)
        samples.append(F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    # [B * H, D, Q, L, P] times [B * H, 1, Q, L, P], summed over levels and points
    stacked = torch.stack(samples, dim=3)
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels, points)
    out = (stacked * weights).sum(dim=(3, 4))  # [B * H, D, Q]
    return out.view(batch, heads * head_dim, queries).transpose(1, 2).contiguous()


register_op(
    "multi_scale_deformable_attention",
    detops=detops_deform_attn.multi_scale_deformable_attention,
    reference=reference_msda,
    torchvision="",
)


def make_case(
    batch=2,
    queries=5,
    heads=2,
    head_dim=3,
    shapes=((4, 5), (3, 3)),
    points=2,
    dtype=torch.float64,
    seed=0,
    spread=0.2,
):
    """Random arguments: locations mostly inside [0, 1], `spread` beyond each border."""
    g = torch.Generator().manual_seed(seed)
    spatial = torch.tensor(shapes, dtype=torch.int64).reshape(-1, 2)
    levels = spatial.shape[0]
    total = int((spatial[:, 0] * spatial[:, 1]).sum())
    value = torch.randn(batch, total, heads, head_dim, generator=g, dtype=torch.float64)
    loc = torch.rand(batch, queries, heads, levels, points, 2, generator=g, dtype=torch.float64)
    loc = loc * (1 + 2 * spread) - spread
    attn = torch.rand(batch, queries, heads, levels, points, generator=g, dtype=torch.float64)
    attn = attn / attn.sum(dim=(3, 4), keepdim=True).clamp_min(1e-12)
    return {
        "value": value.to(dtype),
        "value_spatial_shapes": spatial,
        "sampling_locations": loc.to(dtype),
        "attention_weights": attn.to(dtype),
    }


def start_index(spatial: Tensor) -> Tensor:
    sizes = spatial[:, 0] * spatial[:, 1]
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
