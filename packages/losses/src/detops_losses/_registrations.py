"""What the loss ops register with torch besides their kernels: fake kernels (output
shapes for torch.compile and torch.export), autograd and autocast. The native entry points
(csrc/*_checks.h) own the argument checks. One block per op."""

import torch

from detops_core.autograd import forbid_double_backward, register_autograd
from detops_core.fake import one_device

from . import _library  # noqa: F401  (the ops must exist before we register against them)
from .box_iou_loss_registrations import BOX_IOU_LOSSES  # noqa: F401  (registers them on import)

_lib = torch.ops.detops

# ----------------------------------------------------------------------------- sigmoid_focal_loss


@torch.library.register_fake("detops::sigmoid_focal_loss")
def _sigmoid_focal_loss_fake(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    one_device("detops.sigmoid_focal_loss", inputs=inputs, targets=targets)
    return inputs.new_empty(inputs.shape if reduction == "none" else ())


@torch.library.register_fake("detops::_sigmoid_focal_loss_backward")
def _sigmoid_focal_loss_backward_fake(grad, inputs, targets, alpha, gamma, reduction, need_targets):
    one_device("detops._sigmoid_focal_loss_backward", grad_output=grad, inputs=inputs, targets=targets)
    return inputs.new_empty(inputs.shape), targets.new_empty(targets.shape if need_targets else (0,))


def _sigmoid_focal_loss_grads(args, grad):
    # Arguments left at their schema defaults may arrive as None.
    alpha = 0.25 if args.alpha is None else args.alpha
    gamma = 2.0 if args.gamma is None else args.gamma
    reduction = "none" if args.reduction is None else args.reduction
    need_targets = args.needs_grad["targets"]
    grad_inputs, grad_targets = _lib._sigmoid_focal_loss_backward(
        grad, args.inputs, args.targets, alpha, gamma, reduction, need_targets
    )
    return {"inputs": grad_inputs, "targets": grad_targets}


register_autograd("detops::sigmoid_focal_loss", _sigmoid_focal_loss_grads, save=("inputs", "targets"))
forbid_double_backward("detops::_sigmoid_focal_loss_backward", "detops.sigmoid_focal_loss")
# Not detops_core.autocast's rule (results back in the inputs' dtype): under autocast
# torchvision's loss is float32 (binary_cross_entropy_with_logits autocasts to float32 and
# the rest promotes), so the arguments are cast to float32 and the float32 result is kept.
for _device in ("cpu", "cuda"):
    torch.library.register_autocast("detops::sigmoid_focal_loss", _device, torch.float32)
