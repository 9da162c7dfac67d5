"""Fake kernels, autograd and autocast for the deformable-convolution ops, so they trace
under torch.compile and torch.export, differentiate, and run under autocast.

The fake kernels run csrc/deform_checks.h's shape, dtype and device checks in its order and
with its words (detops_core.messages), so a traced call fails as the native one does."""

import torch

from detops_core.autocast import register_autocast_float32
from detops_core.autograd import register_autograd
from detops_core.messages import check_dim, check_floating, check_same_device, check_same_dtype, shape_str

from . import _library  # noqa: F401  (the ops must exist before we register against them)

_OP = "detops.deform_conv2d"
_BACKWARD_OP = "detops._deform_conv2d_backward"
_INT64_MAX = 2**63 - 1


def _check_params(op, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    torch._check(stride_h > 0 and stride_w > 0, lambda: f"{op}: stride must be positive, got ({stride_h}, {stride_w})")
    torch._check(pad_h >= 0 and pad_w >= 0, lambda: f"{op}: padding must be non-negative, got ({pad_h}, {pad_w})")
    torch._check(
        dilation_h > 0 and dilation_w > 0,
        lambda: f"{op}: dilation must be positive, got ({dilation_h}, {dilation_w})",
    )


def _check_batch(op, name, t, batch):
    torch._check(
        t.shape[0] == batch,
        lambda: f"{op}: {name} must have the batch size of input ({batch}), got {name}.shape[0] = {t.shape[0]}",
    )


def _check_spatial(op, name, t, out_h, out_w):
    torch._check(
        t.shape[2] == out_h and t.shape[3] == out_w,
        lambda: (
            f"{op}: {name} must have the output's spatial size ({out_h}, {out_w}), got ({t.shape[2]}, {t.shape[3]})"
        ),
    )


def _check_inputs(op, input, offset, weight, mask, bias, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    """deform_checks.h's check_inputs: returns the output's (height, width)."""
    _check_params(op, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w)
    check_dim(op, "input", input, 4, "[batch, in_channels, height, width]")
    check_dim(op, "offset", offset, 4, "[batch, 2 * offset_groups * kernel_h * kernel_w, out_height, out_width]")
    check_dim(op, "weight", weight, 4, "[out_channels, in_channels / groups, kernel_h, kernel_w]")
    check_floating(op, "input", input)
    check_same_dtype(op, "input", input, "offset", offset)
    check_same_dtype(op, "input", input, "weight", weight)
    check_same_device(op, "input", input, "offset", offset)
    check_same_device(op, "input", input, "weight", weight)

    batch, in_channels, height, width = input.shape
    out_channels, _, kh, kw = weight.shape
    torch._check(kh > 0 and kw > 0, lambda: f"{op}: weight must have a non-empty kernel, got shape {shape_str(weight)}")
    torch._check(in_channels > 0, lambda: f"{op}: input must have at least one channel, got shape {shape_str(input)}")
    torch._check(
        weight.shape[1] > 0,
        lambda: f"{op}: weight.shape[1] (in_channels / groups) must be positive, got shape {shape_str(weight)}",
    )
    torch._check(
        in_channels % weight.shape[1] == 0,
        lambda: (
            f"{op}: input has {in_channels} channels, which is not a multiple of weight.shape[1] = "
            f"{weight.shape[1]} (in_channels must be divisible by groups = in_channels / weight.shape[1])"
        ),
    )
    groups = in_channels // weight.shape[1]
    torch._check(
        out_channels % groups == 0,
        lambda: f"{op}: weight.shape[0] (out_channels) = {out_channels} must be divisible by groups = {groups}",
    )
    taps = kh * kw
    torch._check(
        offset.shape[1] > 0 and offset.shape[1] % (2 * taps) == 0,
        lambda: (
            f"{op}: offset must have 2 * offset_groups * kernel_h * kernel_w channels, a positive multiple of "
            f"2 * {kh} * {kw} = {2 * taps}, got offset.shape[1] = {offset.shape[1]}"
        ),
    )
    offset_groups = offset.shape[1] // (2 * taps)
    torch._check(
        in_channels % offset_groups == 0,
        lambda: (
            f"{op}: input has {in_channels} channels, which is not divisible by offset_groups = {offset_groups} "
            "(offset.shape[1] / (2 * kernel_h * kernel_w))"
        ),
    )
    # Python integers do not wrap: the C++ check's "does not fit in int64" is a comparison here.
    padded_h, padded_w = height + 2 * pad_h, width + 2 * pad_w
    span_h, span_w = dilation_h * (kh - 1) + 1, dilation_w * (kw - 1) + 1
    torch._check(
        max(2 * pad_h, padded_h, dilation_h * (kh - 1), span_h) <= _INT64_MAX
        and max(2 * pad_w, padded_w, dilation_w * (kw - 1), span_w) <= _INT64_MAX,
        lambda: (
            f"{op}: padding ({pad_h}, {pad_w}) and dilation ({dilation_h}, {dilation_w}) with input size "
            f"({height}, {width}) and kernel ({kh}, {kw}) give a padded input or dilated kernel larger than 2^63 - 1"
        ),
    )
    torch._check(
        padded_h >= span_h and padded_w >= span_w,
        lambda: (
            f"{op}: input of spatial size ({height}, {width}) with padding ({pad_h}, {pad_w}) is smaller than "
            f"the dilated kernel ({span_h}, {span_w})"
        ),
    )
    out_h = (padded_h - span_h) // stride_h + 1
    out_w = (padded_w - span_w) // stride_w + 1
    _check_batch(op, "offset", offset, batch)
    _check_spatial(op, "offset", offset, out_h, out_w)
    torch._check(
        height * width < 2**31,
        lambda: f"{op}: input planes of 2^31 pixels or more are not supported, got ({height}, {width})",
    )
    if mask is not None:
        check_dim(op, "mask", mask, 4, "[batch, offset_groups * kernel_h * kernel_w, out_height, out_width]")
        check_same_dtype(op, "input", input, "mask", mask)
        check_same_device(op, "input", input, "mask", mask)
        torch._check(
            mask.shape[1] == offset_groups * taps,
            lambda: (
                f"{op}: mask must have offset_groups * kernel_h * kernel_w = {offset_groups} * {kh} * {kw} = "
                f"{offset_groups * taps} channels, got mask.shape[1] = {mask.shape[1]}"
            ),
        )
        _check_batch(op, "mask", mask, batch)
        _check_spatial(op, "mask", mask, out_h, out_w)
    if bias is not None:
        torch._check(
            bias.dim() == 1 and bias.shape[0] == out_channels,
            lambda: (
                f"{op}: bias must be a 1-D tensor of shape [out_channels] = [{out_channels}], "
                f"got shape {shape_str(bias)}"
            ),
        )
        check_same_dtype(op, "input", input, "bias", bias)
        check_same_device(op, "input", input, "bias", bias)
    return out_h, out_w


@torch.library.register_fake("detops::deform_conv2d")
def _deform_conv2d_fake(input, offset, weight, bias, mask, *params):
    out_h, out_w = _check_inputs(_OP, input, offset, weight, mask, bias, *params)
    return input.new_empty((input.shape[0], weight.shape[0], out_h, out_w))


@torch.library.register_fake("detops::_deform_conv2d_backward")
def _deform_conv2d_backward_fake(
    grad_out, input, offset, weight, mask, *params, need_input=True, need_offset_mask=True, need_weight=True
):
    params = params[:6]  # need_* passed by position follow the six ints
    out_h, out_w = _check_inputs(_BACKWARD_OP, input, offset, weight, mask, None, *params)
    check_dim(_BACKWARD_OP, "grad_output", grad_out, 4, "[batch, out_channels, out_height, out_width]")
    expected = [input.shape[0], weight.shape[0], out_h, out_w]
    torch._check(
        list(grad_out.shape) == expected,
        lambda: (
            f"{_BACKWARD_OP}: grad_output must have the output's shape [{', '.join(map(str, expected))}], "
            f"got {shape_str(grad_out)}"
        ),
    )
    check_same_dtype(_BACKWARD_OP, "input", input, "grad_output", grad_out)
    check_same_device(_BACKWARD_OP, "input", input, "grad_output", grad_out)
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
