"""What multi_scale_deformable_attention registers with torch besides its kernels: fake
kernels (output shapes for torch.compile and torch.export, with dynamic query and value
counts), autograd and autocast. The native entry point (csrc/deform_attn_checks.h) owns
the argument checks."""

import torch

from detops_core.autocast import register_autocast_float32
from detops_core.autograd import register_autograd
from detops_core.fake import one_device, size

from . import _library  # noqa: F401  (the ops must exist before we register against them)


@torch.library.register_fake("detops::multi_scale_deformable_attention")
def _forward_fake(value, value_spatial_shapes, sampling_locations, attention_weights, value_level_start_index=None):
    one_device(
        "detops.multi_scale_deformable_attention",
        value=value,
        value_spatial_shapes=value_spatial_shapes,
        sampling_locations=sampling_locations,
        attention_weights=attention_weights,
        value_level_start_index=value_level_start_index,
    )
    queries = size(sampling_locations, 1)
    return value.new_empty((size(value, 0), queries, size(value, 2) * size(value, 3)))


@torch.library.register_fake("detops::_multi_scale_deformable_attention_backward")
def _backward_fake(grad, value, value_spatial_shapes, sampling_locations, attention_weights, *rest):
    one_device(
        "detops._multi_scale_deformable_attention_backward",
        value=value,
        sampling_locations=sampling_locations,
        attention_weights=attention_weights,
        grad=grad,
    )
    return (
        value.new_empty(value.shape),
        sampling_locations.new_empty(sampling_locations.shape),
        attention_weights.new_empty(attention_weights.shape),
    )


_SAVED = ("value", "value_spatial_shapes", "sampling_locations", "attention_weights", "value_level_start_index")


def _attention_grads(args, grad):
    need = args.needs_grad
    grad_value, grad_locations, grad_weights = torch.ops.detops._multi_scale_deformable_attention_backward(
        grad, *(getattr(args, name) for name in _SAVED), need["value"],
        need["sampling_locations"] or need["attention_weights"], torch.are_deterministic_algorithms_enabled(),
    )  # fmt: skip
    return {"value": grad_value, "sampling_locations": grad_locations, "attention_weights": grad_weights}


register_autograd("detops::multi_scale_deformable_attention", _attention_grads, save=_SAVED)

# Under autocast, value, locations and weights are computed in float32 (the kernels need
# one dtype for the three; autocast regions mix them) and the result comes back in value's
# dtype.
register_autocast_float32("detops::multi_scale_deformable_attention")
