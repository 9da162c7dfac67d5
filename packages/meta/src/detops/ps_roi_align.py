"""torchvision.ops.ps_roi_align names."""

from detops_roi import PSRoIAlign, ps_roi_align

__all__ = ["PSRoIAlign", "ps_roi_align"]
