"""Loads the native ops (``torch.ops.detops.deform_conv2d`` and its backward) exactly once."""

from detops_core import load_extension

_C = load_extension("detops_deform")
build_info = _C.build_info
