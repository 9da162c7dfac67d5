"""What the RoI ops register with torch besides their kernels: fake kernels (output shapes
for torch.compile and torch.export), autograd, autocast, and roi_align's kernel for
quantized CPU tensors (_quantized.py). The native entry points
(csrc/roi_checks.h) owns the argument checks.

Gradients flow to ``input`` (``features``) only; box coordinates get none, as in
torchvision. The backward ops have no derivative of their own: differentiating through
them (double backward) raises a RuntimeError.
"""

import torch

from detops_core.autocast import register_autocast_float32
from detops_core.autograd import forbid_double_backward, register_autograd
from detops_core.fake import at_least_0, one_device, size

from . import _library  # noqa: F401  (the ops must exist before we register against them)
from ._quantized import quantized_roi_align, quantized_types

_lib = torch.ops.detops

# ----------------------------------------------------------------------------- fake kernels


def _pooled(op, input, rois, channels, ph, pw):
    one_device(op, input=input, rois=rois)
    return input.new_empty((size(rois, 0), channels, at_least_0(ph), at_least_0(pw)))


def _ps_channels(input, ph, pw):
    return size(input, 1) // max(ph * pw, 1)


def _input_grad(op, grad, sizes, **others):
    one_device(op, grad=grad, **others)
    return grad.new_empty([at_least_0(n) for n in sizes])


@torch.library.register_fake("detops::roi_align")
def _roi_align_fake(input, rois, spatial_scale, ph, pw, sampling_ratio, aligned):
    return _pooled("detops.roi_align", input, rois, size(input, 1), ph, pw)


@torch.library.register_fake("detops::roi_align_rotated")
def _roi_align_rotated_fake(input, rois, spatial_scale, ph, pw, sampling_ratio, aligned):
    return _pooled("detops.roi_align_rotated", input, rois, size(input, 1), ph, pw)


@torch.library.register_fake("detops::roi_pool")
def _roi_pool_fake(input, rois, spatial_scale, ph, pw):
    out = _pooled("detops.roi_pool", input, rois, size(input, 1), ph, pw)
    return out, torch.empty_like(out, dtype=torch.int32)


@torch.library.register_fake("detops::ps_roi_align")
def _ps_roi_align_fake(input, rois, spatial_scale, ph, pw, sampling_ratio):
    return _pooled("detops.ps_roi_align", input, rois, _ps_channels(input, ph, pw), ph, pw)


@torch.library.register_fake("detops::ps_roi_pool")
def _ps_roi_pool_fake(input, rois, spatial_scale, ph, pw):
    return _pooled("detops.ps_roi_pool", input, rois, _ps_channels(input, ph, pw), ph, pw)


@torch.library.register_fake("detops::multi_level_roi_align")
def _multi_level_fake(features, spatial_scales, rois, levels, ph, pw, sampling_ratio, aligned):
    op = "detops.multi_level_roi_align"
    one_device(op, features=features, rois=rois, levels=levels)
    like = features[0] if features else rois
    return like.new_empty((size(rois, 0), size(like, 1), at_least_0(ph), at_least_0(pw)))


@torch.library.register_fake("detops::_roi_align_backward")
def _roi_align_backward_fake(grad, rois, spatial_scale, ph, pw, batch, channels, height, width, sr, aligned, det=False):
    return _input_grad("detops._roi_align_backward", grad, (batch, channels, height, width), rois=rois)


@torch.library.register_fake("detops::_roi_align_rotated_backward")
def _roi_align_rotated_backward_fake(
    grad, rois, spatial_scale, ph, pw, batch, channels, height, width, sr, aligned, det=False
):
    return _input_grad("detops._roi_align_rotated_backward", grad, (batch, channels, height, width), rois=rois)


@torch.library.register_fake("detops::_roi_pool_backward")
def _roi_pool_backward_fake(grad, rois, argmax, spatial_scale, ph, pw, batch, channels, height, width, det=False):
    return _input_grad("detops._roi_pool_backward", grad, (batch, channels, height, width), rois=rois, argmax=argmax)


@torch.library.register_fake("detops::_ps_roi_align_backward")
def _ps_roi_align_backward_fake(grad, rois, spatial_scale, ph, pw, sr, batch, channels, height, width, det=False):
    return _input_grad("detops._ps_roi_align_backward", grad, (batch, channels, height, width), rois=rois)


@torch.library.register_fake("detops::_ps_roi_pool_backward")
def _ps_roi_pool_backward_fake(grad, rois, spatial_scale, ph, pw, batch, channels, height, width, det=False):
    return _input_grad("detops._ps_roi_pool_backward", grad, (batch, channels, height, width), rois=rois)


@torch.library.register_fake("detops::_multi_level_roi_align_backward")
def _multi_level_backward_fake(
    grad, rois, levels, scales, heights, widths, batch, channels, ph, pw, sr, aligned, det=False
):
    op = "detops._multi_level_roi_align_backward"
    return [_input_grad(op, grad, (batch, channels, h, w), rois=rois, levels=levels) for h, w in zip(heights, widths)]


# ----------------------------------------------------------------------------- autograd
# Every backward op takes `deterministic`: under torch.use_deterministic_algorithms the CUDA
# kernels add with order-free fixed-point sums instead of float atomics (csrc/roi_schema.cpp).


def _align_grads(backward):
    # roi_align and roi_align_rotated: the same arguments, each its own backward op.
    def grads(args, grad):
        n, c, h, w = args.input
        grad_input = backward(
            grad, args.rois, args.spatial_scale, args.pooled_height, args.pooled_width, n, c, h, w,
            args.sampling_ratio, args.aligned, torch.are_deterministic_algorithms_enabled(),
        )  # fmt: skip
        return {"input": grad_input}

    return grads


def _roi_pool_grads(args, grad, grad_argmax):
    if grad is None:  # only argmax (an integer output) was used
        return {}
    n, c, h, w = args.input
    grad_input = _lib._roi_pool_backward(
        grad, args.rois, args.outputs[1], args.spatial_scale, args.pooled_height, args.pooled_width, n, c, h, w,
        torch.are_deterministic_algorithms_enabled(),
    )  # fmt: skip
    return {"input": grad_input}


def _ps_roi_align_grads(args, grad):
    n, c, h, w = args.input
    grad_input = _lib._ps_roi_align_backward(
        grad, args.rois, args.spatial_scale, args.pooled_height, args.pooled_width, args.sampling_ratio, n, c, h, w,
        torch.are_deterministic_algorithms_enabled(),
    )  # fmt: skip
    return {"input": grad_input}


def _ps_roi_pool_grads(args, grad):
    n, c, h, w = args.input
    grad_input = _lib._ps_roi_pool_backward(
        grad, args.rois, args.spatial_scale, args.pooled_height, args.pooled_width, n, c, h, w,
        torch.are_deterministic_algorithms_enabled(),
    )  # fmt: skip
    return {"input": grad_input}


def _multi_level_grads(args, grad):
    n, c = args.features[0][:2]
    heights = [shape[2] for shape in args.features]
    widths = [shape[3] for shape in args.features]
    grads = _lib._multi_level_roi_align_backward(
        grad, args.rois, args.levels, list(args.spatial_scales), heights, widths, n, c,
        args.pooled_height, args.pooled_width, args.sampling_ratio, args.aligned,
        torch.are_deterministic_algorithms_enabled(),
    )  # fmt: skip
    return {"features": list(grads)}


register_autograd("detops::roi_align", _align_grads(_lib._roi_align_backward), save=("rois",))
register_autograd("detops::roi_align_rotated", _align_grads(_lib._roi_align_rotated_backward), save=("rois",))
# argmax is an int32 output: materialising its gradient would fill a zero tensor as large
# as the output before every backward, only for it to be ignored.
register_autograd(
    "detops::roi_pool",
    _roi_pool_grads,
    save=("rois",),
    save_outputs=(1,),
    materialize_grads=False,
)
register_autograd("detops::ps_roi_align", _ps_roi_align_grads, save=("rois",))
register_autograd("detops::ps_roi_pool", _ps_roi_pool_grads, save=("rois",))
register_autograd("detops::multi_level_roi_align", _multi_level_grads, save=("rois", "levels"))

_OPS = ("roi_align", "roi_align_rotated", "roi_pool", "ps_roi_align", "ps_roi_pool", "multi_level_roi_align")
for _name in _OPS:
    forbid_double_backward(f"detops::_{_name}_backward", f"detops.{_name}")
    # Under autocast the RoI ops compute in float32 (float16/bfloat16 features and float32
    # boxes agree) and return the feature map's dtype, as torchvision's autocast kernels do.
    register_autocast_float32(f"detops::{_name}")


# ------------------------------------------------------------------------ quantized tensors

# Where torch still has quantized dtypes: roi_align of quantized input and rois (what
# torchvision's wrapper sends to its qroi_align). The registration lives as long as _quantized_lib.
_quantized_lib = torch.library.Library("detops", "FRAGMENT")
if quantized_types():
    _quantized_lib.impl("roi_align", quantized_roi_align, "QuantizedCPU")
