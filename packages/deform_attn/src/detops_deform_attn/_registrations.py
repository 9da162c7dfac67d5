"""Fake kernels, autograd and autocast for the multi-scale deformable attention ops, so they
trace under torch.compile and torch.export (with dynamic query and value counts),
differentiate, and run under autocast."""

import torch

from detops_core.autocast import register_autocast_float32

from . import _library  # noqa: F401  (the ops must exist before we register against them)

_OP = "detops.multi_scale_deformable_attention"


@torch.library.register_fake("detops::multi_scale_deformable_attention")
def _forward_fake(value, value_spatial_shapes, sampling_locations, attention_weights, value_level_start_index=None):
    # The shape checks that need no data; sum(height * width) == S needs the level sizes,
    # which only the kernel sees.
    torch._check(value.dim() == 4, lambda: f"{_OP}: value must be a 4-D tensor, got shape {list(value.shape)}")
    torch._check(
        sampling_locations.dim() == 6,
        lambda: f"{_OP}: sampling_locations must be a 6-D tensor, got shape {list(sampling_locations.shape)}",
    )
    torch._check(
        attention_weights.dim() == 5,
        lambda: f"{_OP}: attention_weights must be a 5-D tensor, got shape {list(attention_weights.shape)}",
    )
    for name, t in (("sampling_locations", sampling_locations), ("attention_weights", attention_weights)):
        torch._check(
            t.dtype == value.dtype and t.device == value.device,
            lambda name=name, t=t: (
                f"{_OP}: value and {name} must have the same dtype and device, "
                f"got {value.dtype} on {value.device} and {t.dtype} on {t.device}"
            ),
        )
    batch, _, heads, head_dim = value.shape
    return value.new_empty((batch, sampling_locations.shape[1], heads * head_dim))


@torch.library.register_fake("detops::_multi_scale_deformable_attention_backward")
def _backward_fake(grad, value, value_spatial_shapes, sampling_locations, attention_weights, *rest):
    return (
        value.new_empty(value.shape),
        sampling_locations.new_empty(sampling_locations.shape),
        attention_weights.new_empty(attention_weights.shape),
    )


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:5])


def _backward(ctx, grad):
    value, shapes, loc, attn, start_index = ctx.saved_tensors
    need = ctx.needs_input_grad  # (value, shapes, locations, weights, start index)
    grad_value, grad_loc, grad_attn = torch.ops.detops._multi_scale_deformable_attention_backward(
        grad, value, shapes, loc, attn, start_index, need[0], need[2] or need[3]
    )
    return (
        grad_value if need[0] else None,
        None,
        grad_loc if need[2] else None,
        grad_attn if need[3] else None,
        None,
    )


torch.library.register_autograd("detops::multi_scale_deformable_attention", _backward, setup_context=_setup_context)

# Under autocast, value, locations and weights are computed in float32 (the kernels need
# one dtype for the three; autocast regions mix them) and the result comes back in value's
# dtype.
register_autocast_float32("detops::multi_scale_deformable_attention")
