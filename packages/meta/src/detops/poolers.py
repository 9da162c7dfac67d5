"""torchvision.ops.poolers names."""

from detops_fpn.poolers import LevelMapper, MultiScaleRoIAlign, initLevelMapper

__all__ = ["LevelMapper", "MultiScaleRoIAlign", "initLevelMapper"]
