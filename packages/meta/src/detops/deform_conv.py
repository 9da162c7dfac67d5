"""torchvision.ops.deform_conv names."""

from detops_deform import DeformConv2d, deform_conv2d

__all__ = ["DeformConv2d", "deform_conv2d"]
