"""torchvision.ops.poolers names."""

from detops_fpn.poolers import LevelMapper, MultiScaleRoIAlign, initLevelMapper
from detops_nms import box_area
from detops_roi import roi_align

# box_area and roi_align: torchvision's module imports them, and code imports them from there.
__all__ = ["LevelMapper", "MultiScaleRoIAlign", "box_area", "initLevelMapper", "roi_align"]
