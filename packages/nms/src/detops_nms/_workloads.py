"""Synthetic detector outputs for benchmarks and the demo (no data set needed).

RPN-like proposals: FPN anchors (strides 4..64, three aspect ratios) over an image,
scored by their overlap with a few random "objects" plus noise, moved part of the way
towards the object they overlap most, top-N by score. Like real proposals they come in
dense clusters, so NMS suppresses most of each cluster.
"""

from typing import Tuple

import torch
from torch import Tensor

from .boxes import box_iou


def _anchors(height: int, width: int) -> Tensor:
    levels = []
    for stride in (4, 8, 16, 32, 64):
        ys = (torch.arange(0, height, stride, dtype=torch.float32) + stride / 2).repeat_interleave(
            len(range(0, width, stride))
        )
        xs = (torch.arange(0, width, stride, dtype=torch.float32) + stride / 2).repeat(len(range(0, height, stride)))
        for ratio in (0.5, 1.0, 2.0):
            w = 8.0 * stride / ratio**0.5
            h = 8.0 * stride * ratio**0.5
            levels.append(torch.stack((xs - w / 2, ys - h / 2, xs + w / 2, ys + h / 2), dim=1))
    return torch.cat(levels)


def rpn_proposals(
    n: int, height: int = 800, width: int = 1216, objects: int = 30, seed: int = 0
) -> Tuple[Tensor, Tensor]:
    """`n` proposals (Tensor[n, 4], xyxy) and their scores (Tensor[n])."""
    g = torch.Generator().manual_seed(seed)
    anchors = _anchors(height, width)
    centre = torch.rand(objects, 2, generator=g) * torch.tensor([width, height], dtype=torch.float32)
    size = 24 + torch.rand(objects, 2, generator=g) * 360
    truth = torch.cat((centre - size / 2, centre + size / 2), dim=1)
    iou = box_iou(anchors, truth)
    best, which = iou.max(dim=1)
    pull = 0.6 * best[:, None]
    moved = anchors + pull * (truth[which] - anchors)
    moved = moved + torch.randn(moved.shape, generator=g) * 4
    scores = best + 0.25 * torch.rand(best.shape, generator=g)
    top = scores.topk(n).indices
    boxes = moved[top]
    boxes = torch.cat((boxes[:, :2].clamp(min=0), torch.max(boxes[:, 2:], boxes[:, :2] + 1)), dim=1)
    return boxes.contiguous(), scores[top].contiguous()


def detections(n: int, classes: int = 80, seed: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-class detection candidates as a box head produces them before batched_nms:
    clustered boxes, scores, and a class index per box."""
    boxes, scores = rpn_proposals(n, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    labels = torch.randint(0, classes, (n,), generator=g)
    return boxes, scores, labels
