"""torchvision.ops.ps_roi_pool names."""

from detops_roi import PSRoIPool, ps_roi_pool

__all__ = ["PSRoIPool", "ps_roi_pool"]
