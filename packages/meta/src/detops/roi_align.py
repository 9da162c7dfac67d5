"""torchvision.ops.roi_align names."""

from detops_roi import RoIAlign, roi_align

__all__ = ["RoIAlign", "roi_align"]
