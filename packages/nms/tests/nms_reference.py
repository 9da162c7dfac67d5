"""Obviously-correct NMS written from the definition, registered as the oracle of nms and
batched_nms next to torchvision's (where installed). Every differential test compares
detops with each of oracles(op), so the suite means the same thing with or without
torchvision (the torch 2.13 and 2.15 compat environments have none)."""

import torch
from torch import Tensor

import detops_nms
from detops_core.testing import call, register_op


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


register_op("nms", detops=detops_nms.nms, reference=reference_nms)
register_op("batched_nms", detops=detops_nms.batched_nms, reference=reference_batched_nms)


def _has_ties(scores: Tensor) -> bool:
    numbers = scores[~scores.isnan()]
    return len(scores) - len(numbers) > 1 or len(torch.unique(numbers)) < len(numbers)


def oracle_keep(op: str, oracle: str, boxes: Tensor, scores: Tensor, *rest) -> Tensor:
    """The kept indices of `op` ("nms" or "batched_nms") as `oracle` computes them on
    (boxes, scores, *rest), on the CPU.

    torchvision's CPU kernels take float32/float64 only, so narrow inputs reach every oracle
    as their float32 values (detops computes float16/bfloat16 in float32). torchvision's
    CUDA nms ranks scores with an unstable sort, so among equal scores (NaNs included) a
    different box of a tied pair can survive; its CPU kernel sorts stably, as detops
    promises: where scores tie, the oracle runs on CPU copies, elsewhere on the inputs'
    own device."""
    on = torch.device("cpu") if _has_ties(scores) else scores.device
    dtype = _compute_dtype(boxes)
    rest = tuple(a.to(on) if isinstance(a, Tensor) else a for a in rest)
    return call(op, oracle, boxes.to(on, dtype), scores.to(on, dtype), *rest).cpu()


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
