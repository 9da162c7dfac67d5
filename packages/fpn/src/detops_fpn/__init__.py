"""detops-fpn: FeaturePyramidNetwork (fused top-down op) and MultiScaleRoIAlign (fused
multi-level RoIAlign), with torchvision.ops semantics and state_dict layout."""

from ._library import build_info
from .feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7
from .ops import fpn_upsample_add
from .poolers import MultiScaleRoIAlign

__all__ = [
    "ExtraFPNBlock",
    "FeaturePyramidNetwork",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "MultiScaleRoIAlign",
    "build_info",
    "fpn_upsample_add",
]
__version__ = __import__("importlib.metadata").metadata.version("detops-fpn")
