"""detops-nms: non-maximum suppression with torchvision.ops semantics.

``nms`` and ``batched_nms`` run native CPU and CUDA kernels registered as
``torch.ops.detops.nms`` and ``torch.ops.detops.batched_nms``; they script with
TorchScript, trace under ``torch.compile(fullgraph=True)`` and ``torch.export``, and
compute float16/bfloat16 inputs in float32.

Defined behaviour on unusual input (identical to torchvision's CPU kernel):

- scores are ranked by a stable descending sort: NaN scores rank first, equal scores keep
  their input order;
- a box with a NaN coordinate has NaN area, so its IoU with every box is NaN: it is never
  suppressed and never suppresses;
- an IoU exactly equal to ``iou_threshold`` does not suppress;
- empty input returns an empty int64 tensor.
"""

import torch
from torch import Tensor

from . import _meta  # noqa: F401  (registers fake kernels and autocast)
from ._library import build_info
from .boxes import box_area, box_convert, box_iou, clip_boxes_to_image, remove_small_boxes

__all__ = [
    "nms",
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes_to_image",
    "remove_small_boxes",
    "build_info",
]
__version__ = "0.1.0"


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes (Tensor[N, 4]): boxes in ``(x1, y1, x2, y2)`` format.
        scores (Tensor[N]): one score per box, same dtype as ``boxes``.
        iou_threshold (float): boxes with IoU > iou_threshold with a kept, higher-scoring
            box are discarded.

    Returns:
        Tensor[K] (int64): indices of the kept boxes, in decreasing order of score.
    """
    return torch.ops.detops.nms(boxes, scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Non-maximum suppression applied independently to each category in one native call:
    boxes with different ``idxs`` never suppress each other.

    Args:
        boxes (Tensor[N, 4]): boxes in ``(x1, y1, x2, y2)`` format.
        scores (Tensor[N]): one score per box, same dtype as ``boxes``.
        idxs (Tensor[N]): integer category of each box (any integer dtype; any values).
        iou_threshold (float): IoU above which a lower-scoring box of the same category is
            discarded.

    Returns:
        Tensor[K] (int64): indices of the kept boxes, in decreasing order of score (equal
        scores in input order).
    """
    if idxs.dtype in (torch.int32, torch.int16, torch.int8, torch.uint8):
        idxs = idxs.to(torch.int64)
    return torch.ops.detops.batched_nms(boxes, scores, idxs, iou_threshold)
