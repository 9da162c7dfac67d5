"""torchvision.ops.boxes names: NMS and box utilities; plus the NMS variants torchvision
does not have (soft-NMS, per-image NMS; nms / batched_nms take max_output) and the
rotated-box ops (box_iou_rotated, nms_rotated, batched_nms_rotated; cxcywhr, degrees). The
pairwise generalized_box_iou, distance_box_iou and complete_box_iou are native ops with
native gradients."""

from detops_nms import (
    batched_nms,
    batched_nms_rotated,
    batched_soft_nms,
    box_area,
    box_convert,
    box_iou,
    box_iou_rotated,
    clip_boxes_to_image,
    complete_box_iou,
    distance_box_iou,
    from_mmcv_rotated,
    generalized_box_iou,
    masks_to_boxes,
    nms,
    nms_per_image,
    nms_rotated,
    remove_small_boxes,
    soft_nms,
    to_mmcv_rotated,
)

__all__ = [
    "batched_nms",
    "batched_nms_rotated",
    "batched_soft_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "box_iou_rotated",
    "clip_boxes_to_image",
    "complete_box_iou",
    "distance_box_iou",
    "from_mmcv_rotated",
    "generalized_box_iou",
    "masks_to_boxes",
    "nms",
    "nms_per_image",
    "nms_rotated",
    "remove_small_boxes",
    "soft_nms",
    "to_mmcv_rotated",
]
