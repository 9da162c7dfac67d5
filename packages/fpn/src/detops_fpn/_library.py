"""Loads the native ops (``torch.ops.detops.fpn_upsample_add`` and its backward) once."""

from detops_core import load_extension

_C = load_extension("detops_fpn")
build_info = _C.build_info
