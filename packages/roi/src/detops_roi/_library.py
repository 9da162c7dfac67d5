"""Loads the native RoI ops (``torch.ops.detops.roi_align`` ...) exactly once."""

from detops_core import load_extension

_C = load_extension("detops_roi")
build_info = _C.build_info
