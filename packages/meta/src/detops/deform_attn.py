"""Multi-scale deformable attention (not in torchvision.ops): see detops_deform_attn."""

from detops_deform_attn import MultiScaleDeformableAttention, multi_scale_deformable_attention

__all__ = ["MultiScaleDeformableAttention", "multi_scale_deformable_attention"]
