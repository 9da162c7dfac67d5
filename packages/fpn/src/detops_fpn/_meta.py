"""Fake kernels and autograd for the FPN ops.

Autocast: none registered on purpose. torchvision's top-down step (interpolate + add) runs
in its inputs' dtype under autocast, and so does fpn_upsample_add; the Python wrapper
promotes mixed dtypes the way ``lateral + upsampled`` would.
"""

import torch

from detops_core.autograd import register_autograd

from . import _library  # noqa: F401  (the ops must exist before we register against them)


def _check(top: torch.Tensor, lateral: torch.Tensor) -> None:
    op = "detops.fpn_upsample_add"
    torch._check(
        top.dim() == 4 and lateral.dim() == 4,
        lambda: f"{op}: top and lateral must be 4-D [N, C, H, W], got {list(top.shape)} and {list(lateral.shape)}",
    )
    torch._check(
        top.shape[0] == lateral.shape[0] and top.shape[1] == lateral.shape[1],
        lambda: (
            f"{op}: top and lateral must have the same batch size and channels, "
            f"got {list(top.shape)} and {list(lateral.shape)}"
        ),
    )
    torch._check(
        top.dtype == lateral.dtype and top.is_floating_point(),
        lambda: f"{op}: top and lateral must have the same floating-point dtype, got {top.dtype} and {lateral.dtype}",
    )
    torch._check(
        top.device == lateral.device,
        lambda: f"{op}: top and lateral must be on the same device, got {top.device} and {lateral.device}",
    )


@torch.library.register_fake("detops::fpn_upsample_add")
def _upsample_add_fake(top, lateral):
    _check(top, lateral)
    return torch.empty_like(lateral, memory_format=torch.contiguous_format)


@torch.library.register_fake("detops::_fpn_upsample_add_backward")
def _upsample_add_backward_fake(grad, top_height, top_width):
    return grad.new_empty((grad.shape[0], grad.shape[1], top_height, top_width))


def _backward(args, grad):
    _, _, top_height, top_width = args.top
    return {"top": torch.ops.detops._fpn_upsample_add_backward(grad, top_height, top_width), "lateral": grad}


def _double_backward(args, grad_grad_top):
    # The backward is linear in grad; its adjoint is the nearest upsample itself.
    zeros = grad_grad_top.new_zeros(args.grad)
    return {"grad": torch.ops.detops.fpn_upsample_add(grad_grad_top, zeros)}


register_autograd("detops::fpn_upsample_add", _backward)
register_autograd("detops::_fpn_upsample_add_backward", _double_backward)
