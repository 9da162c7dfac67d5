"""detops-fpn: FeaturePyramidNetwork and the fused top-down op, with torchvision.ops
semantics and state_dict layout."""

from ._library import build_info
from .feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7
from .ops import fpn_upsample_add

__all__ = [
    "ExtraFPNBlock",
    "FeaturePyramidNetwork",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "build_info",
    "fpn_upsample_add",
]
__version__ = "0.1.0"
