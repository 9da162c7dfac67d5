"""Fake kernels and autograd for the FPN ops.

Autocast: none registered on purpose. torchvision's top-down step (interpolate + add) runs
in its inputs' dtype under autocast, and so does fpn_upsample_add; the Python wrapper
promotes mixed dtypes the way ``lateral + upsampled`` would.

The fake kernels run csrc/upsample_checks.h's checks in its order and with its words
(detops_core.messages), so a traced call fails as the native one does.
"""

import torch

from detops_core.autograd import register_autograd
from detops_core.messages import check_dim, check_floating, check_same_device, check_same_dtype, shape_str

from . import _library  # noqa: F401  (the ops must exist before we register against them)

_OP = "detops.fpn_upsample_add"
_BACKWARD_OP = "detops._fpn_upsample_add_backward"


def _check(top: torch.Tensor, lateral: torch.Tensor) -> None:
    """csrc/upsample_checks.h's check_upsample_add, in its order and words."""
    check_dim(_OP, "top", top, 4, "[N, C, H, W]")
    check_dim(_OP, "lateral", lateral, 4, "[N, C, H, W]")
    torch._check(
        top.shape[0] == lateral.shape[0] and top.shape[1] == lateral.shape[1],
        lambda: (
            f"{_OP}: top and lateral must have the same batch size and channels, "
            f"got top {shape_str(top)} and lateral {shape_str(lateral)}"
        ),
    )
    check_floating(_OP, "top", top)
    check_same_dtype(_OP, "top", top, "lateral", lateral)
    check_same_device(_OP, "top", top, "lateral", lateral)
    any_planes = top.shape[0] > 0 and top.shape[1] > 0
    torch._check(
        not any_planes or lateral.shape[2] == 0 or lateral.shape[3] == 0 or (top.shape[2] > 0 and top.shape[3] > 0),
        lambda: (
            f"{_OP}: top must have a non-empty spatial size to be upsampled to lateral's "
            f"{lateral.shape[2]}x{lateral.shape[3]}, got top {shape_str(top)}"
        ),
    )


@torch.library.register_fake("detops::fpn_upsample_add")
def _upsample_add_fake(top, lateral):
    _check(top, lateral)
    return torch.empty_like(lateral, memory_format=torch.contiguous_format)


@torch.library.register_fake("detops::_fpn_upsample_add_backward")
def _upsample_add_backward_fake(grad, top_height, top_width):
    check_dim(_BACKWARD_OP, "grad", grad, 4, "[N, C, H, W]")
    check_floating(_BACKWARD_OP, "grad", grad)
    torch._check(
        top_height >= 0 and top_width >= 0,
        lambda: f"{_BACKWARD_OP}: top_height and top_width must be >= 0, got {top_height} and {top_width}",
    )
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
