"""Category ids as the ops' schemas take them (TorchScript-compatible)."""

import torch
from torch import Tensor


def as_int64(idxs: Tensor) -> Tensor:
    """``idxs`` widened to int64 when it is a narrower integer dtype. Any other dtype is
    passed on unchanged, so that the op's own check names it."""
    if idxs.dtype in (torch.int32, torch.int16, torch.int8, torch.uint8):
        return idxs.to(torch.int64)
    return idxs
