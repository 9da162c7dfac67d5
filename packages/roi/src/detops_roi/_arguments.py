"""Box-format handling shared by the RoI functions (TorchScript-compatible)."""

from typing import List, Union

import torch
from torch import Tensor


def to_rois(op: str, boxes: Union[Tensor, List[Tensor]], input: Tensor) -> Tensor:
    """``boxes`` as a Tensor[K, 5] of (batch index, x1, y1, x2, y2).

    A Tensor is returned as is (its shape is checked); a list of Tensor[L_i, 4] (one per
    image) is concatenated with image i's index prepended. An empty list gives an empty
    Tensor[0, 5] of the input's dtype.
    """
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.size(1) != 5:
            raise RuntimeError(
                op + ": boxes must be a Tensor[K, 5] of (batch index, x1, y1, x2, y2) or a "
                "list of Tensor[L, 4], got a tensor of shape " + str(list(boxes.shape))
            )
        return boxes
    if len(boxes) == 0:
        return torch.empty((0, 5), dtype=input.dtype, device=input.device)
    parts: List[Tensor] = []
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.size(1) != 4:
            raise RuntimeError(
                op + ": boxes[" + str(i) + "] must be a Tensor[L, 4] of (x1, y1, x2, y2), got "
                "shape " + str(list(b.shape))
            )
        parts.append(torch.cat([torch.full_like(b[:, :1], float(i)), b], dim=1))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
