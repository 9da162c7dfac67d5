"""Argument handling shared by the RoI functions (TorchScript-compatible): boxes to rois,
and the int and size checks Python must make before the schema's conversions hide them.
Everything else is the native ops' to check."""

from collections.abc import Iterable
from typing import List, Union

import torch
from torch import Tensor
from torch.jit.annotations import BroadcastingList2

from detops_core.errors import AssertionRuntimeError


def to_rois(op: str, boxes: Union[Tensor, List[Tensor]], input: Tensor, fields: str = "x1, y1, x2, y2") -> Tensor:
    """``boxes`` as a Tensor[K, 1 + F] of (batch index, `fields`), F the number of fields.

    A Tensor is returned as is; a list of Tensor[L_i, F] (one per
    image) is concatenated with image i's index prepended. An empty list gives an empty
    Tensor[0, 1 + F] of the input's dtype.
    """
    width = len(fields.split(", "))
    if isinstance(boxes, torch.Tensor):
        return boxes  # the native op checks its shape, naming it rois
    if len(boxes) == 0:
        return torch.empty((0, width + 1), dtype=input.dtype, device=input.device)
    parts: List[Tensor] = []
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.size(1) != width:
            raise AssertionRuntimeError(
                op + ": boxes[" + str(i) + "] must be a Tensor[L, " + str(width) + "] of (" + fields + "), got "
                "shape " + str(list(b.shape))
            )
        parts.append(torch.cat([torch.full_like(b[:, :1], float(i)), b], dim=1))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def check_int(op: str, name: str, value: int) -> None:
    if not torch.jit.is_scripting():
        if isinstance(value, bool) or not isinstance(value, int):
            raise RuntimeError(op + ": " + name + " must be an int, got " + str(value))


def size_pair(op: str, output_size: BroadcastingList2[int]) -> List[int]:
    """output_size as [height, width]: an int is both; TorchScript already passes a list."""
    if torch.jit.is_scripting():
        return output_size
    size = list(output_size) if isinstance(output_size, Iterable) else [output_size, output_size]
    # (7,) or "7" would fail later with a bare "list index out of range".
    if len(size) < 2:
        raise RuntimeError(op + ": output_size must be an int or a pair of ints, got " + str(output_size))
    return size
