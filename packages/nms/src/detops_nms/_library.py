"""Loads the native ops (``torch.ops.detops.nms`` / ``batched_nms``) exactly once."""

from detops_core import load_extension

_C = load_extension("detops_nms")
build_info = _C.build_info
