"""torchvision.ops.giou_loss names: generalized_box_iou_loss (a native op of detops-losses)."""

from detops_losses import generalized_box_iou_loss

__all__ = ["generalized_box_iou_loss"]
