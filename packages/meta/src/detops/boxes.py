"""torchvision.ops.boxes names: NMS and box utilities; plus the NMS variants torchvision
does not have (soft-NMS, per-image NMS; nms / batched_nms take max_output)."""

from detops_nms import (
    batched_nms,
    batched_soft_nms,
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    nms,
    nms_per_image,
    remove_small_boxes,
    soft_nms,
)

__all__ = [
    "batched_nms",
    "batched_soft_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes_to_image",
    "nms",
    "nms_per_image",
    "remove_small_boxes",
    "soft_nms",
]
