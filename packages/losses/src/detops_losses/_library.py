"""Loads the native loss ops (``torch.ops.detops.sigmoid_focal_loss`` ...) exactly once."""

from detops_core import load_extension

_C = load_extension("detops_losses")
build_info = _C.build_info
