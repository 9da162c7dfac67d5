"""Fake kernels, autograd and autocast for the deformable-convolution ops, so they trace
under torch.compile and torch.export, differentiate, and run under autocast."""

import torch

from detops_core.autocast import register_autocast_float32
from detops_core.autograd import register_autograd

from . import _library  # noqa: F401  (the ops must exist before we register against them)

_OP = "detops.deform_conv2d"


def _output_size(size, pad: int, dilation: int, kernel: int, stride: int):
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def _check_same_kind(input, name, t):
    torch._check(
        t.dtype == input.dtype and t.device == input.device,
        lambda: (
            f"{_OP}: input and {name} must have the same dtype and device, "
            f"got {input.dtype} on {input.device} and {t.dtype} on {t.device}"
        ),
    )


@torch.library.register_fake("detops::deform_conv2d")
def _deform_conv2d_fake(input, offset, weight, bias, mask, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    # The kernels' parameter checks, first: the output size below divides by the stride.
    torch._check(stride_h > 0 and stride_w > 0, lambda: f"{_OP}: stride must be positive, got ({stride_h}, {stride_w})")
    torch._check(pad_h >= 0 and pad_w >= 0, lambda: f"{_OP}: padding must be non-negative, got ({pad_h}, {pad_w})")
    torch._check(
        dilation_h > 0 and dilation_w > 0,
        lambda: f"{_OP}: dilation must be positive, got ({dilation_h}, {dilation_w})",
    )
    torch._check(input.dim() == 4, lambda: f"{_OP}: input must be a 4-D tensor, got shape {list(input.shape)}")
    torch._check(offset.dim() == 4, lambda: f"{_OP}: offset must be a 4-D tensor, got shape {list(offset.shape)}")
    torch._check(weight.dim() == 4, lambda: f"{_OP}: weight must be a 4-D tensor, got shape {list(weight.shape)}")
    for name, t in (("offset", offset), ("weight", weight), ("bias", bias), ("mask", mask)):
        if t is not None:
            _check_same_kind(input, name, t)
    kh, kw = weight.shape[2], weight.shape[3]
    out_h = _output_size(input.shape[2], pad_h, dilation_h, kh, stride_h)
    out_w = _output_size(input.shape[3], pad_w, dilation_w, kw, stride_w)
    torch._check(
        offset.shape[2] == out_h and offset.shape[3] == out_w,
        lambda: f"{_OP}: offset must have the output's spatial size ({out_h}, {out_w}), got {tuple(offset.shape[2:])}",
    )
    if mask is not None:
        torch._check(
            mask.dim() == 4 and mask.shape[2] == out_h and mask.shape[3] == out_w,
            lambda: f"{_OP}: mask must have the output's spatial size ({out_h}, {out_w}), got shape {list(mask.shape)}",
        )
    return input.new_empty((input.shape[0], weight.shape[0], out_h, out_w))


@torch.library.register_fake("detops::_deform_conv2d_backward")
def _deform_conv2d_backward_fake(grad_out, input, offset, weight, mask, *params):
    grad_mask = mask.new_empty(mask.shape) if mask is not None else input.new_empty((0,))
    return (
        input.new_empty(input.shape),
        offset.new_empty(offset.shape),
        weight.new_empty(weight.shape),
        grad_mask,
        input.new_empty((weight.shape[0],)),
    )


_PARAMS = ("stride_h", "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w")


def _backward(args, grad):
    need = args.needs_grad
    grad_input, grad_offset, grad_weight, grad_mask, grad_bias = torch.ops.detops._deform_conv2d_backward(
        grad, args.input, args.offset, args.weight, args.mask, *(getattr(args, p) for p in _PARAMS),
        need_input=need["input"], need_offset_mask=need["offset"] or need["mask"], need_weight=need["weight"],
    )  # fmt: skip
    grads = {"input": grad_input, "offset": grad_offset, "weight": grad_weight, "bias": grad_bias}
    if args.mask is not None:
        grads["mask"] = grad_mask
    return grads


register_autograd("detops::deform_conv2d", _backward, save=("input", "offset", "weight", "mask"))

# Under autocast every floating tensor argument is computed in float32 (the kernels need
# one dtype for input, offset, weight, mask and bias; autocast regions mix them) and the
# result comes back in the input's dtype, as torchvision's autocast kernel returns it.
register_autocast_float32("detops::deform_conv2d")
