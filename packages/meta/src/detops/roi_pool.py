"""torchvision.ops.roi_pool names."""

from detops_roi import RoIPool, roi_pool

__all__ = ["RoIPool", "roi_pool"]
