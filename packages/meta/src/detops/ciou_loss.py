"""torchvision.ops.ciou_loss names: complete_box_iou_loss (a native op of detops-losses)."""

from detops_losses import complete_box_iou_loss

__all__ = ["complete_box_iou_loss"]
