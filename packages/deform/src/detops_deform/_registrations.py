"""What deform_conv2d registers with torch besides its kernels: fake kernels (output shapes
for torch.compile and torch.export), autograd and autocast. The native entry point
(csrc/deform_checks.h) owns the argument checks."""

import torch

from detops_core.autocast import register_autocast_float32
from detops_core.autograd import register_autograd
from detops_core.fake import one_device, size

from . import _library  # noqa: F401  (the ops must exist before we register against them)


@torch.library.register_fake("detops::deform_conv2d")
def _deform_conv2d_fake(input, offset, weight, bias, mask, *params):
    one_device("detops.deform_conv2d", input=input, offset=offset, weight=weight, bias=bias, mask=mask)
    # The output has offset's spatial size: the native op checks that it is the
    # convolution's.
    return input.new_empty((size(input, 0), size(weight, 0), size(offset, 2), size(offset, 3)))


@torch.library.register_fake("detops::_deform_conv2d_backward")
def _deform_conv2d_backward_fake(grad_out, input, offset, weight, mask, *params_and_needs):
    op = "detops._deform_conv2d_backward"
    one_device(op, input=input, offset=offset, weight=weight, mask=mask, grad_output=grad_out)
    grad_mask = mask.new_empty(mask.shape) if mask is not None else input.new_empty((0,))
    grads = (input.new_empty(input.shape), offset.new_empty(offset.shape), weight.new_empty(weight.shape))
    return (*grads, grad_mask, input.new_empty((size(weight, 0),)))


_PARAMS = ("stride_h", "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w")


def _deform_conv2d_grads(args, grad):
    need = args.needs_grad
    grad_input, grad_offset, grad_weight, grad_mask, grad_bias = torch.ops.detops._deform_conv2d_backward(
        grad, args.input, args.offset, args.weight, args.mask, *(getattr(args, p) for p in _PARAMS),
        need_input=need["input"], need_offset_mask=need["offset"] or need["mask"], need_weight=need["weight"],
        deterministic=torch.are_deterministic_algorithms_enabled(),
    )  # fmt: skip
    grads = {"input": grad_input, "offset": grad_offset, "weight": grad_weight, "bias": grad_bias}
    if args.mask is not None:
        grads["mask"] = grad_mask
    return grads


register_autograd("detops::deform_conv2d", _deform_conv2d_grads, save=("input", "offset", "weight", "mask"))

# Under autocast every floating tensor argument is computed in float32 (the kernels need
# one dtype for input, offset, weight, mask and bias; autocast regions mix them) and the
# result comes back in the input's dtype, as torchvision's autocast kernel returns it.
register_autocast_float32("detops::deform_conv2d")
