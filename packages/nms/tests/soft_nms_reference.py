"""Soft-NMS, NMS with a limit and per-image NMS written from their definitions, in plain
Python loops (slow, obviously correct). detops' kernels must give exactly these results.

Soft-NMS (Bodla et al. 2017), as detops defines it:

- Work in float32 (float64 for float64 input). A box whose score is below
  ``score_threshold`` is dropped (NaN never is).
- Repeatedly select the live box with the highest current score (NaN above everything,
  equal scores: lower input index first) and output it with that score. Every other live
  box b is then decayed by the IoU of the selected box with b (computed as nms computes
  it): linear multiplies by ``1 - IoU`` when ``IoU > iou_threshold``; gaussian by
  ``exp(-IoU^2 / sigma)``. A NaN IoU leaves the score alone. The weight is computed in
  float64 and the product rounded once to the working dtype. Boxes whose decayed score
  falls below ``score_threshold`` are dropped.
- batched: the same per class; all kept boxes ordered by decayed score (NaN first), equal
  scores by input index.
"""

import math
from typing import List, Optional, Tuple

import torch
from nms_reference import reference_batched_nms, reference_nms
from torch import Tensor

import detops_nms
from detops_core.testing import register_op


def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _iou_row(b: Tensor, area: Tensor, i: int, rest: Tensor) -> Tensor:
    """IoU of box i with boxes `rest`, in the working dtype, as nms computes it."""
    w = (torch.minimum(b[i, 2], b[rest, 2]) - torch.maximum(b[i, 0], b[rest, 0])).clamp(min=0)
    h = (torch.minimum(b[i, 3], b[rest, 3]) - torch.maximum(b[i, 1], b[rest, 1])).clamp(min=0)
    inter = w * h
    return inter / (area[i] + area[rest] - inter)


def _weight(iou: float, method: str, iou_threshold: float, sigma: float) -> float:
    if math.isnan(iou):
        return 1.0
    if method == "linear":
        return 1.0 - iou if iou > iou_threshold else 1.0
    return math.exp(-(iou * iou) / sigma)


def _before(a: float, ia: int, b: float, ib: int) -> bool:
    """Whether score a of box ia is selected before score b of box ib."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and (not math.isnan(b) or ia < ib)
    return a > b or (a == b and ia < ib)


def reference_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: str = "gaussian",
) -> Tuple[Tensor, Tensor]:
    keep, kept = _soft_nms(boxes, scores, iou_threshold, sigma, score_threshold, method)
    return keep, kept.to(scores.dtype)


def _soft_nms(boxes, scores, iou_threshold, sigma, score_threshold, method) -> Tuple[Tensor, Tensor]:
    """Kept indices and their scores in the working dtype."""
    dtype = _compute_dtype(boxes)
    b = boxes.detach().cpu().to(dtype)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    s = scores.detach().cpu().to(dtype).clone()
    live = [i for i in range(len(b)) if not float(s[i]) < score_threshold]
    keep: List[int] = []
    kept_scores: List[float] = []
    while live:
        best = live[0]
        for i in live[1:]:
            if _before(float(s[i]), i, float(s[best]), best):
                best = i
        keep.append(best)
        kept_scores.append(float(s[best]))
        live.remove(best)
        if not live:
            break
        ious = _iou_row(b, area, best, torch.tensor(live)).tolist()
        survivors = []
        for i, iou in zip(live, ious):
            w = _weight(iou, method, iou_threshold, sigma)
            s[i] = torch.tensor(float(s[i]) * w, dtype=torch.float64).to(dtype)
            if not float(s[i]) < score_threshold:
                survivors.append(i)
        live = survivors
    return torch.tensor(keep, dtype=torch.int64), torch.tensor(kept_scores, dtype=dtype)


def _order(idx: List[int], s: List[float]) -> List[int]:
    """Positions of (idx, s) by decreasing s, NaN first, equal s by lower idx."""
    import functools

    def cmp(p, q):
        return -1 if _before(s[p], idx[p], s[q], idx[q]) else 1

    return sorted(range(len(idx)), key=functools.cmp_to_key(cmp))


def reference_batched_soft_nms(
    boxes, scores, idxs, iou_threshold=0.3, sigma=0.5, score_threshold=0.001, method="gaussian"
):
    """Soft-NMS per class; the kept boxes of all classes by decreasing score in the working
    dtype (NaN first), equal scores by input index."""
    keep: List[int] = []
    kept: List[float] = []
    for c in torch.unique(idxs.cpu()):
        members = torch.where(idxs.cpu() == c)[0]
        k, s = _soft_nms(boxes.cpu()[members], scores.cpu()[members], iou_threshold, sigma, score_threshold, method)
        keep += members[k].tolist()
        kept += s.tolist()
    order = _order(keep, kept)
    kept_scores = torch.tensor([kept[p] for p in order], dtype=_compute_dtype(scores)).to(scores.dtype)
    return torch.tensor([keep[p] for p in order], dtype=torch.int64), kept_scores


def reference_nms_limited(boxes, scores, iou_threshold, max_output: Optional[int]) -> Tensor:
    keep = reference_nms(boxes.cpu(), scores.cpu(), iou_threshold)
    return keep if max_output is None else keep[:max_output]


def reference_nms_per_image(boxes, scores, iou_threshold, idxs=None, max_output: Optional[int] = None) -> Tensor:
    """(image, box) pairs: images in order, each image's boxes in nms / batched_nms order."""
    rows = []
    for image in range(boxes.shape[0]):
        b, s = boxes[image].cpu(), scores[image].cpu()
        if idxs is None:
            keep = reference_nms(b, s, iou_threshold)
        else:
            keep = reference_batched_nms(b, s, idxs[image].cpu(), iou_threshold)
        if max_output is not None:
            keep = keep[:max_output]
        rows += [(image, int(k)) for k in keep]
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, 2)


# torchvision has none of these ops: the reference is their one oracle.
register_op("soft_nms", detops=detops_nms.soft_nms, reference=reference_soft_nms, torchvision="")
register_op(
    "batched_soft_nms", detops=detops_nms.batched_soft_nms, reference=reference_batched_soft_nms, torchvision=""
)
register_op("nms_per_image", detops=detops_nms.nms_per_image, reference=reference_nms_per_image, torchvision="")
