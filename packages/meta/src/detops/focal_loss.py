"""torchvision.ops.focal_loss: sigmoid_focal_loss, a fused native op (see detops_losses)."""

from detops_losses import sigmoid_focal_loss

__all__ = ["sigmoid_focal_loss"]
