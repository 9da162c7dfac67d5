"""torchvision.ops.feature_pyramid_network names."""

from detops_fpn import ExtraFPNBlock, FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

# torchvision's module imports it from misc, and code imports it from here too.
from .misc import Conv2dNormActivation

__all__ = ["Conv2dNormActivation", "ExtraFPNBlock", "FeaturePyramidNetwork", "LastLevelMaxPool", "LastLevelP6P7"]
