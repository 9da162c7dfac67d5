"""Loads the native ops (``torch.ops.detops.multi_scale_deformable_attention`` and its
backward) exactly once."""

from detops_core import load_extension

_C = load_extension("detops_deform_attn")
build_info = _C.build_info
