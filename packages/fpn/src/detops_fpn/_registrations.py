"""What fpn_upsample_add registers with torch besides its kernels: fake kernels (output
shapes for torch.compile and torch.export) and autograd. The native entry point
(csrc/upsample_add_checks.h) owns the argument checks.

Autocast: none registered on purpose. torchvision's top-down step (interpolate + add) runs
in its inputs' dtype under autocast, and so does fpn_upsample_add; the Python wrapper
promotes mixed dtypes the way ``lateral + upsampled`` would.
"""

import torch

from detops_core.autograd import register_autograd
from detops_core.fake import at_least_0, one_device, size

from . import _library  # noqa: F401  (the ops must exist before we register against them)


@torch.library.register_fake("detops::fpn_upsample_add")
def _upsample_add_fake(top, lateral):
    one_device("detops.fpn_upsample_add", top=top, lateral=lateral)
    return torch.empty_like(lateral, memory_format=torch.contiguous_format)


@torch.library.register_fake("detops::_fpn_upsample_add_backward")
def _upsample_add_backward_fake(grad, top_height, top_width):
    return grad.new_empty((size(grad, 0), size(grad, 1), at_least_0(top_height), at_least_0(top_width)))


def _upsample_add_grads(args, grad):
    _, _, top_height, top_width = args.top
    return {"top": torch.ops.detops._fpn_upsample_add_backward(grad, top_height, top_width), "lateral": grad}


def _upsample_add_backward_grads(args, grad_grad_top):
    # The backward is linear in grad; its adjoint is the nearest upsample itself.
    zeros = grad_grad_top.new_zeros(args.grad)
    return {"grad": torch.ops.detops.fpn_upsample_add(grad_grad_top, zeros)}


register_autograd("detops::fpn_upsample_add", _upsample_add_grads)
register_autograd("detops::_fpn_upsample_add_backward", _upsample_add_backward_grads)
