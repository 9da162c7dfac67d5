"""What the box IoU loss ops register with torch besides their kernels: fake kernels
(shapes only) and autograd. No autocast kernel: float16 / bfloat16 boxes are computed in
float32 natively and the loss stays float32, which is torchvision's result under autocast
too (its formulas upcast and autocast leaves them alone)."""

import torch

from detops_core.autograd import forbid_double_backward, register_autograd
from detops_core.fake import one_device

from . import _library  # noqa: F401  (the ops must exist before we register against them)

BOX_IOU_LOSSES = ("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss")
_NARROW = (torch.float16, torch.bfloat16)


def _loss_fake(name):
    def fake(boxes1, boxes2, reduction="none", eps=1e-7):
        one_device(f"detops.{name}", boxes1=boxes1, boxes2=boxes2)
        dtype = torch.float32 if boxes1.dtype in _NARROW else boxes1.dtype
        shape = boxes1.shape[:-1] if reduction == "none" and boxes1.dim() > 0 else ()
        return boxes1.new_empty(shape, dtype=dtype)

    return fake


def _backward_fake(name):
    def fake(grad, boxes1, boxes2, reduction, eps):
        one_device(f"detops._{name}_backward", boxes1=boxes1, boxes2=boxes2, grad=grad)
        return boxes1.new_empty(boxes1.shape), boxes2.new_empty(boxes2.shape)

    return fake


def _grads(name):
    backward = getattr(torch.ops.detops, f"_{name}_backward")

    def grads(args, grad):
        reduction = "none" if args.reduction is None else args.reduction
        eps = 1e-7 if args.eps is None else args.eps
        grad1, grad2 = backward(grad, args.boxes1, args.boxes2, reduction, eps)
        return {"boxes1": grad1, "boxes2": grad2}

    return grads


for _name in BOX_IOU_LOSSES:
    torch.library.register_fake(f"detops::{_name}", _loss_fake(_name))
    torch.library.register_fake(f"detops::_{_name}_backward", _backward_fake(_name))
    register_autograd(f"detops::{_name}", _grads(_name), save=("boxes1", "boxes2"))
    forbid_double_backward(f"detops::_{_name}_backward", f"detops.{_name}")
