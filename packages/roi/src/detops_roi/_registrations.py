"""Fake kernels, autograd and autocast for the RoI ops, so they differentiate, trace under
torch.compile / torch.export and run under autocast.

Gradients flow to ``input`` (``features``) only; box coordinates get none, as in
torchvision. The backward ops have no derivative of their own: differentiating through
them (double backward) raises a RuntimeError.
"""

import torch

from detops_core.autocast import register_autocast_float32
from detops_core.autograd import forbid_double_backward, register_autograd
from detops_core.messages import check_dim, check_floating, check_same_device, check_same_dtype, dtype_name, shape_str

from . import _library  # noqa: F401  (the ops must exist before we register against them)

_lib = torch.ops.detops


# The fake kernels check what the C++ entry points check (csrc/roi_checks.h,
# csrc/level_checks.h), in the same order and in the same words: under torch.compile and
# torch.export a bad call then fails as it would eagerly. Data (batch indices, levels) is
# checked by the native ops only.

_MAX_SAMPLING_RATIO = 1024  # roi_checks.h's kMaxSamplingRatio
# Feature maps one multi_level_roi_align call takes, per device (the CUDA kernel passes
# them by value; the CPU has no limit): the Backend::kMaxLevels of roi_cpu.h / roi_cuda.cuh.
_MAX_LEVELS = {"cuda": 8}
_NO_LIMIT = 2**64 - 1  # how the CPU's size_t limit prints


def _check_input(op, input):
    check_dim(op, "input", input, 4, "[N, C, H, W]")
    check_floating(op, "input", input)


# roi_checks.h's RoiLayout: a row's width and its fields as the messages name them.
BOX_ROIS = (5, "(batch index, x1, y1, x2, y2)")
ROTATED_ROIS = (6, "(batch index, cx, cy, w, h, r)")


def _check_rois(op, like_name, like, rois, layout=BOX_ROIS):
    columns, fields = layout
    torch._check(
        rois.dim() == 2 and rois.shape[1] == columns,
        lambda: (
            f"{op}: rois must be a 2-D tensor of shape [K, {columns}] holding {fields}, got shape {shape_str(rois)}"
        ),
    )
    check_same_dtype(op, like_name, like, "rois", rois)
    # A meta tensor next to a CPU one dispatches here too: without this check the call
    # would return an uninitialised tensor on the other device.
    check_same_device(op, like_name, like, "rois", rois)


def _check_output_size(op, ph, pw):
    torch._check(
        ph >= 1 and pw >= 1,
        lambda: f"{op}: output_size (pooled_height, pooled_width) must be at least 1, got ({ph}, {pw})",
    )
    torch._check(ph * pw < 2**63, lambda: f"{op}: output_size ({ph}, {pw}) has more than 2^63 - 1 bins")


def _check_sampling_ratio(op, sampling_ratio):
    torch._check(
        sampling_ratio <= _MAX_SAMPLING_RATIO,
        lambda: (
            f"{op}: sampling_ratio must be <= 0 (adaptive) or between 1 and {_MAX_SAMPLING_RATIO}, got {sampling_ratio}"
        ),
    )


def _ps_channels(op, channels, ph, pw):
    torch._check(
        channels % (ph * pw) == 0,
        lambda: f"{op}: input channels ({channels}) must be divisible by output_size[0] * output_size[1] ({ph * pw})",
    )
    return channels // (ph * pw)


def check_forward(op, input, rois, ph, pw, sampling_ratio=0, layout=BOX_ROIS):
    """roi_checks.h's check_forward; returns the number of output channels."""
    _check_input(op, input)
    _check_rois(op, "input", input, rois, layout)
    _check_output_size(op, ph, pw)
    _check_sampling_ratio(op, sampling_ratio)
    if op.startswith("detops.ps_"):
        return _ps_channels(op, input.shape[1], ph, pw)
    return input.shape[1]


def check_backward(op, grad, rois, ph, pw, sampling_ratio, batch, channels, height, width, layout=BOX_ROIS):
    """roi_checks.h's check_backward; returns the fake input gradient."""
    _check_output_size(op, ph, pw)
    _check_sampling_ratio(op, sampling_ratio)
    torch._check(
        batch >= 0 and channels >= 0 and height >= 0 and width >= 0,
        lambda: f"{op}: input sizes must be non-negative, got [{batch}, {channels}, {height}, {width}]",
    )
    grad_channels = _ps_channels(op, channels, ph, pw) if op.startswith("detops._ps_") else channels
    _check_rois(op, "grad", grad, rois, layout)
    expected = [rois.shape[0], grad_channels, ph, pw]
    torch._check(
        grad.dim() == 4 and list(grad.shape) == expected,
        lambda: f"{op}: grad must have shape [{', '.join(map(str, expected))}], got {shape_str(grad)}",
    )
    check_floating(op, "grad", grad)
    return grad.new_empty((batch, channels, height, width))


# ----------------------------------------------------------------------------- fake kernels


@torch.library.register_fake("detops::roi_align")
def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    c = check_forward("detops.roi_align", input, rois, pooled_height, pooled_width, sampling_ratio)
    return input.new_empty((rois.shape[0], c, pooled_height, pooled_width))


@torch.library.register_fake("detops::roi_pool")
def _roi_pool_fake(input, rois, spatial_scale, pooled_height, pooled_width):
    op = "detops.roi_pool"
    c = check_forward(op, input, rois, pooled_height, pooled_width)
    torch._check(
        input.shape[2] * input.shape[3] < 2**31,
        lambda: f"{op}: input planes must have fewer than 2^31 elements (argmax is int32), got {shape_str(input)}",
    )
    shape = (rois.shape[0], c, pooled_height, pooled_width)
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.int32)


@torch.library.register_fake("detops::ps_roi_align")
def _ps_roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio):
    c_out = check_forward("detops.ps_roi_align", input, rois, pooled_height, pooled_width, sampling_ratio)
    return input.new_empty((rois.shape[0], c_out, pooled_height, pooled_width))


@torch.library.register_fake("detops::ps_roi_pool")
def _ps_roi_pool_fake(input, rois, spatial_scale, pooled_height, pooled_width):
    c_out = check_forward("detops.ps_roi_pool", input, rois, pooled_height, pooled_width)
    return input.new_empty((rois.shape[0], c_out, pooled_height, pooled_width))


def _max_levels(t):
    return _MAX_LEVELS.get(t.device.type, _NO_LIMIT)


@torch.library.register_fake("detops::multi_level_roi_align")
def _multi_level_fake(features, spatial_scales, rois, levels, pooled_height, pooled_width, sampling_ratio, aligned):
    op = "detops.multi_level_roi_align"  # level_checks.h's check_levels
    torch._check(len(features) > 0, lambda: f"{op}: features must hold at least one feature map")
    limit = _max_levels(features[0])
    torch._check(
        len(features) <= limit,
        lambda: f"{op}: at most {limit} feature maps are supported here, got {len(features)}",
    )
    _check_output_size(op, pooled_height, pooled_width)
    _check_sampling_ratio(op, sampling_ratio)
    torch._check(
        len(spatial_scales) == len(features),
        lambda: (
            f"{op}: spatial_scales must have one entry per feature map: "
            f"{len(features)} maps but {len(spatial_scales)} scales"
        ),
    )
    first = features[0]
    for i, f in enumerate(features):
        _check_input(op, f)
        torch._check(
            f.shape[0] == first.shape[0] and f.shape[1] == first.shape[1],
            lambda i=i, f=f: (
                f"{op}: features[{i}] must have the batch size and channels of features[0] "
                f"{shape_str(first)}, got {shape_str(f)}"
            ),
        )
        check_same_dtype(op, "features[0]", first, f"features[{i}]", f)
        check_same_device(op, "features[0]", first, f"features[{i}]", f)
    _check_rois(op, "features[0]", first, rois)
    torch._check(
        levels.dim() == 1 and levels.shape[0] == rois.shape[0],
        lambda: (
            f"{op}: levels must be a 1-D tensor with one level per RoI ({rois.shape[0]}), got shape {shape_str(levels)}"
        ),
    )
    torch._check(
        levels.dtype == torch.int64, lambda: f"{op}: levels must be an int64 tensor, got {dtype_name(levels.dtype)}"
    )
    check_same_device(op, "rois", rois, "levels", levels)
    return first.new_empty((rois.shape[0], first.shape[1], pooled_height, pooled_width))


@torch.library.register_fake("detops::_roi_align_backward")
def _roi_align_backward_fake(grad, rois, spatial_scale, ph, pw, batch_size, channels, height, width, sr, aligned):
    return check_backward("detops._roi_align_backward", grad, rois, ph, pw, sr, batch_size, channels, height, width)


@torch.library.register_fake("detops::_roi_pool_backward")
def _roi_pool_backward_fake(grad, rois, argmax, spatial_scale, ph, pw, batch_size, channels, height, width):
    op = "detops._roi_pool_backward"
    grad_input = check_backward(op, grad, rois, ph, pw, 0, batch_size, channels, height, width)
    torch._check(
        argmax.dtype == torch.int32 and argmax.shape == grad.shape,
        lambda: (
            f"{op}: argmax must be an int32 tensor shaped like grad {shape_str(grad)}, "
            f"got {dtype_name(argmax.dtype)} {shape_str(argmax)}"
        ),
    )
    check_same_device(op, "grad", grad, "argmax", argmax)
    return grad_input


@torch.library.register_fake("detops::_ps_roi_align_backward")
def _ps_roi_align_backward_fake(grad, rois, spatial_scale, ph, pw, sr, batch_size, channels, height, width):
    op = "detops._ps_roi_align_backward"
    return check_backward(op, grad, rois, ph, pw, sr, batch_size, channels, height, width)


@torch.library.register_fake("detops::_ps_roi_pool_backward")
def _ps_roi_pool_backward_fake(grad, rois, spatial_scale, ph, pw, batch_size, channels, height, width):
    return check_backward("detops._ps_roi_pool_backward", grad, rois, ph, pw, 0, batch_size, channels, height, width)


@torch.library.register_fake("detops::_multi_level_roi_align_backward")
def _multi_level_backward_fake(grad, rois, levels, scales, heights, widths, batch_size, channels, ph, pw, sr, aligned):
    op = "detops._multi_level_roi_align_backward"  # level_checks.h's check_levels_backward
    limit = _max_levels(grad)
    torch._check(
        0 < len(scales) <= limit and len(heights) == len(scales) and len(widths) == len(scales),
        lambda: (
            f"{op}: spatial_scales, heights and widths must have one entry per level (1 to {limit} levels), "
            f"got {len(scales)}, {len(heights)} and {len(widths)}"
        ),
    )
    grads = [check_backward(op, grad, rois, ph, pw, sr, batch_size, channels, h, w) for h, w in zip(heights, widths)]
    torch._check(
        levels.dim() == 1 and levels.shape[0] == rois.shape[0] and levels.dtype == torch.int64,
        lambda: f"{op}: levels must be an int64 tensor of shape [{rois.shape[0]}]",
    )
    return grads


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
