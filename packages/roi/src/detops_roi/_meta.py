"""Fake kernels, autograd and autocast for the RoI ops, so they differentiate, trace under
torch.compile / torch.export and run under autocast.

Gradients flow to ``input`` (``features``) only; box coordinates get none, as in
torchvision. The backward ops have no derivative of their own: differentiating through
them (double backward) raises a RuntimeError.
"""

import torch

from detops_core.autocast import register_autocast_float32
from detops_core.autograd import forbid_double_backward, register_autograd

from . import _library  # noqa: F401  (the ops must exist before we register against them)

_lib = torch.ops.detops


def _check_rois(op, input, rois):
    torch._check(
        input.dim() == 4, lambda: f"{op}: input must be a 4-D tensor [N, C, H, W], got shape {list(input.shape)}"
    )
    torch._check(
        rois.dim() == 2 and rois.shape[1] == 5,
        lambda: f"{op}: rois must be a 2-D tensor of shape [K, 5], got shape {list(rois.shape)}",
    )
    torch._check(
        input.dtype == rois.dtype,
        lambda: f"{op}: input and rois must have the same dtype, got {input.dtype} and {rois.dtype}",
    )
    # A meta tensor next to a CPU one dispatches here too: without this check the call
    # would return an uninitialised tensor on the other device.
    torch._check(
        input.device == rois.device,
        lambda: f"{op}: input and rois must be on the same device, got {input.device} and {rois.device}",
    )


def _check_size(op, ph, pw):
    torch._check(ph >= 1 and pw >= 1, lambda: f"{op}: output_size must be at least 1, got ({ph}, {pw})")


def _ps_channels(op, channels, ph, pw):
    torch._check(
        channels % (ph * pw) == 0,
        lambda: f"{op}: input channels ({channels}) must be divisible by output_size[0] * output_size[1] ({ph * pw})",
    )
    return channels // (ph * pw)


# ----------------------------------------------------------------------------- fake kernels


@torch.library.register_fake("detops::roi_align")
def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    _check_rois("detops.roi_align", input, rois)
    _check_size("detops.roi_align", pooled_height, pooled_width)
    return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))


@torch.library.register_fake("detops::roi_pool")
def _roi_pool_fake(input, rois, spatial_scale, pooled_height, pooled_width):
    _check_rois("detops.roi_pool", input, rois)
    _check_size("detops.roi_pool", pooled_height, pooled_width)
    shape = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.int32)


@torch.library.register_fake("detops::ps_roi_align")
def _ps_roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio):
    _check_rois("detops.ps_roi_align", input, rois)
    _check_size("detops.ps_roi_align", pooled_height, pooled_width)
    c_out = _ps_channels("detops.ps_roi_align", input.shape[1], pooled_height, pooled_width)
    return input.new_empty((rois.shape[0], c_out, pooled_height, pooled_width))


@torch.library.register_fake("detops::ps_roi_pool")
def _ps_roi_pool_fake(input, rois, spatial_scale, pooled_height, pooled_width):
    _check_rois("detops.ps_roi_pool", input, rois)
    _check_size("detops.ps_roi_pool", pooled_height, pooled_width)
    c_out = _ps_channels("detops.ps_roi_pool", input.shape[1], pooled_height, pooled_width)
    return input.new_empty((rois.shape[0], c_out, pooled_height, pooled_width))


@torch.library.register_fake("detops::multi_level_roi_align")
def _multi_level_fake(features, spatial_scales, rois, levels, pooled_height, pooled_width, sampling_ratio, aligned):
    op = "detops.multi_level_roi_align"
    torch._check(len(features) > 0, lambda: f"{op}: features must hold at least one feature map")
    torch._check(
        len(spatial_scales) == len(features),
        lambda: f"{op}: spatial_scales must have one entry per feature map",
    )
    for f in features:
        _check_rois(op, f, rois)
    _check_size(op, pooled_height, pooled_width)
    torch._check(levels.dim() == 1 and levels.shape[0] == rois.shape[0], lambda: f"{op}: levels must have shape [K]")
    torch._check(
        levels.device == rois.device,
        lambda: f"{op}: rois and levels must be on the same device, got {rois.device} and {levels.device}",
    )
    return features[0].new_empty((rois.shape[0], features[0].shape[1], pooled_height, pooled_width))


@torch.library.register_fake("detops::_roi_align_backward")
def _roi_align_backward_fake(grad, rois, spatial_scale, ph, pw, batch_size, channels, height, width, sr, aligned):
    return grad.new_empty((batch_size, channels, height, width))


@torch.library.register_fake("detops::_roi_pool_backward")
def _roi_pool_backward_fake(grad, rois, argmax, spatial_scale, ph, pw, batch_size, channels, height, width):
    return grad.new_empty((batch_size, channels, height, width))


@torch.library.register_fake("detops::_ps_roi_align_backward")
def _ps_roi_align_backward_fake(grad, rois, spatial_scale, ph, pw, sr, batch_size, channels, height, width):
    return grad.new_empty((batch_size, channels, height, width))


@torch.library.register_fake("detops::_ps_roi_pool_backward")
def _ps_roi_pool_backward_fake(grad, rois, spatial_scale, ph, pw, batch_size, channels, height, width):
    return grad.new_empty((batch_size, channels, height, width))


@torch.library.register_fake("detops::_multi_level_roi_align_backward")
def _multi_level_backward_fake(grad, rois, levels, scales, heights, widths, batch_size, channels, ph, pw, sr, aligned):
    return [grad.new_empty((batch_size, channels, h, w)) for h, w in zip(heights, widths)]


# ----------------------------------------------------------------------------- autograd


def _roi_align_backward(args, grad):
    n, c, h, w = args.input
    grad_input = _lib._roi_align_backward(
        grad, args.rois, args.spatial_scale, args.pooled_height, args.pooled_width, n, c, h, w,
        args.sampling_ratio, args.aligned,
    )  # fmt: skip
    return {"input": grad_input}


def _roi_pool_backward(args, grad, grad_argmax):
    if grad is None:  # only argmax (an integer output) was used
        return {}
    n, c, h, w = args.input
    grad_input = _lib._roi_pool_backward(
        grad, args.rois, args.outputs[1], args.spatial_scale, args.pooled_height, args.pooled_width, n, c, h, w
    )
    return {"input": grad_input}


def _ps_roi_align_backward(args, grad):
    n, c, h, w = args.input
    grad_input = _lib._ps_roi_align_backward(
        grad, args.rois, args.spatial_scale, args.pooled_height, args.pooled_width, args.sampling_ratio, n, c, h, w
    )
    return {"input": grad_input}


def _ps_roi_pool_backward(args, grad):
    n, c, h, w = args.input
    grad_input = _lib._ps_roi_pool_backward(
        grad, args.rois, args.spatial_scale, args.pooled_height, args.pooled_width, n, c, h, w
    )
    return {"input": grad_input}


def _multi_level_backward(args, grad):
    n, c = args.features[0][:2]
    heights = [shape[2] for shape in args.features]
    widths = [shape[3] for shape in args.features]
    grads = _lib._multi_level_roi_align_backward(
        grad, args.rois, args.levels, list(args.spatial_scales), heights, widths, n, c,
        args.pooled_height, args.pooled_width, args.sampling_ratio, args.aligned,
    )  # fmt: skip
    return {"features": list(grads)}


register_autograd("detops::roi_align", _roi_align_backward, save=("rois",))
# argmax is an int32 output: materialising its gradient would fill a zero tensor as large
# as the output before every backward, only for it to be ignored.
register_autograd("detops::roi_pool", _roi_pool_backward, save=("rois",), save_outputs=(1,), materialize_grads=False)
register_autograd("detops::ps_roi_align", _ps_roi_align_backward, save=("rois",))
register_autograd("detops::ps_roi_pool", _ps_roi_pool_backward, save=("rois",))
register_autograd("detops::multi_level_roi_align", _multi_level_backward, save=("rois", "levels"))

for _name in ("roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool", "multi_level_roi_align"):
    forbid_double_backward(f"detops::_{_name}_backward", f"detops.{_name}")

# ----------------------------------------------------------------------------- autocast

# Under autocast the RoI ops compute in float32 (float16/bfloat16 features and float32
# boxes agree) and return the feature map's dtype, as torchvision's autocast kernels do.
for _op in ("roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool", "multi_level_roi_align"):
    register_autocast_float32(f"detops::{_op}")
