"""torchvision.ops.diou_loss names: distance_box_iou_loss (a native op of detops-losses)."""

from detops_losses import distance_box_iou_loss

__all__ = ["distance_box_iou_loss"]
