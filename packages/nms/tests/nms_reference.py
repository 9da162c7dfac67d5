"""Obviously-correct NMS written from the definition, plus the torchvision oracle when it
is installed. Every differential test compares detops with each entry of ORACLES, so the
suite means the same thing with or without torchvision (the torch 2.13 and 2.15 compat
environments have none)."""

from typing import Callable, Dict

import torch
from torch import Tensor


def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def reference_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS: visit boxes by decreasing score (stable, NaN first, as torch.sort);
    keep a box unless a kept box has IoU > threshold with it. IoU is computed in float32
    (float64 for float64 input) and compared with the threshold in float64."""
    dtype = _compute_dtype(boxes)
    boxes = boxes.to(dtype)
    scores = scores.to(dtype)
    order = torch.sort(scores, stable=True, descending=True).indices
    b = boxes[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    alive = torch.ones(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(int(order[i]))
        rest = b[i + 1 :]
        w = (torch.minimum(b[i, 2], rest[:, 2]) - torch.maximum(b[i, 0], rest[:, 0])).clamp(min=0)
        h = (torch.minimum(b[i, 3], rest[:, 3]) - torch.maximum(b[i, 1], rest[:, 1])).clamp(min=0)
        inter = w * h
        iou = inter / (area[i] + area[i + 1 :] - inter)
        alive[i + 1 :] &= ~(iou.double() > iou_threshold)
    return torch.tensor(keep, dtype=torch.int64)


def reference_batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS per class, then all kept boxes by decreasing score (stable)."""
    kept = []
    for c in torch.unique(idxs):
        members = torch.where(idxs == c)[0]
        kept.append(members[reference_nms(boxes[members], scores[members], iou_threshold)])
    if not kept:
        return torch.empty(0, dtype=torch.int64)
    kept_t = torch.sort(torch.cat(kept)).values
    order = torch.sort(scores[kept_t].to(_compute_dtype(scores)), stable=True, descending=True).indices
    return kept_t[order]


# The reference loops in Python over CPU tensors: inputs on another device are compared
# through CPU copies. Every oracle accepts inputs on any device.
ORACLES: Dict[str, Dict[str, Callable]] = {
    "reference": {
        "nms": lambda b, s, t: reference_nms(b.cpu(), s.cpu(), t),
        "batched_nms": lambda b, s, i, t: reference_batched_nms(b.cpu(), s.cpu(), i.cpu(), t),
    },
}
try:
    import torchvision

    def _tv_device(scores: Tensor) -> torch.device:
        # torchvision's CUDA nms ranks scores with an unstable sort, so equal scores (NaNs
        # included) come out in an unspecified order and a different box of a tied pair can
        # survive. Its CPU kernel sorts stably, as detops promises: where scores tie, that
        # is the oracle; elsewhere torchvision runs on the inputs' own device.
        numbers = scores[~scores.isnan()]
        ties = len(scores) - len(numbers) > 1 or len(torch.unique(numbers)) < len(numbers)
        return torch.device("cpu") if ties else scores.device

    def _tv_nms(boxes, scores, thr):
        on = _tv_device(scores)
        return torchvision.ops.nms(boxes.to(on), scores.to(on), thr)

    def _tv_batched(boxes, scores, idxs, thr):
        on = _tv_device(scores)
        return torchvision.ops.batched_nms(boxes.to(on), scores.to(on), idxs.to(on), thr)

    # torchvision's CPU kernels take float32/float64 only: narrow inputs are compared with
    # their float32 values (detops computes float16/bfloat16 in float32).
    ORACLES["torchvision"] = {
        "nms": lambda b, s, t: _tv_nms(b.to(_compute_dtype(b)), s.to(_compute_dtype(s)), t),
        "batched_nms": lambda b, s, i, t: _tv_batched(b.to(_compute_dtype(b)), s.to(_compute_dtype(s)), i, t),
    }
except ImportError:  # torch 2.13 / 2.15 compat environments: the reference alone is the oracle
    pass


def boxes_from(corner: Tensor, size: Tensor) -> Tensor:
    return torch.cat((corner, corner + size), dim=1)


def random_boxes(n: int, g: torch.Generator, extent: float = 100.0, max_size: float = 40.0) -> Tensor:
    return boxes_from(torch.rand(n, 2, generator=g) * extent, torch.rand(n, 2, generator=g) * max_size)


def clustered_boxes(n: int, g: torch.Generator, clusters: int = 5) -> Tensor:
    """Boxes jittered around a few centres: most pairs in a cluster overlap heavily."""
    centres = random_boxes(clusters, g, extent=500, max_size=120)
    which = torch.randint(0, clusters, (n,), generator=g)
    return centres[which] + torch.randn(n, 4, generator=g) * 6


def sparse_boxes(n: int, g: torch.Generator) -> Tensor:
    """Small boxes spread over a huge area: almost nothing overlaps."""
    return random_boxes(n, g, extent=1e5, max_size=10)


def same_ordering(a: Tensor, b: Tensor, scores: Tensor) -> bool:
    """Same kept set, and the same scores position by position (equal-score boxes may be
    ordered differently: torchvision's batched_nms sorts its result unstably)."""
    return set(a.tolist()) == set(b.tolist()) and torch.equal(scores[a], scores[b])
