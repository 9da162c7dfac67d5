"""torchvision.ops.roi_align names; plus roi_align_rotated / RoIAlignRotated (rotated RoIs
in cxcywhr, degrees), which torchvision does not have."""

from detops_roi import RoIAlign, RoIAlignRotated, roi_align, roi_align_rotated

__all__ = ["RoIAlign", "RoIAlignRotated", "roi_align", "roi_align_rotated"]
