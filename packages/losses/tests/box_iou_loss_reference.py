"""Pure-PyTorch references of the GIoU / DIoU / CIoU losses, written from their definitions
(Rezatofighi et al. 2019; Zheng et al. 2020) with torchvision's conventions (eps in the
denominators, intersection only where both sides are positive, alpha constant to the
gradient, CIoU's DIoU part at eps 1e-7), in float64 with autograd, for when torchvision is
not installed; and the box sets the loss tests share."""

import math

import torch


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum() * 0.0
    if reduction == "sum":
        return loss.sum()
    return loss


def _geometry(boxes1, boxes2, eps):
    p, g = boxes1.double(), boxes2.double()
    side_w = torch.minimum(p[..., 2], g[..., 2]) - torch.maximum(p[..., 0], g[..., 0])
    side_h = torch.minimum(p[..., 3], g[..., 3]) - torch.maximum(p[..., 1], g[..., 1])
    positive = (side_w > 0) & (side_h > 0)
    inter = torch.where(positive, side_w * side_h, torch.zeros_like(side_w))
    area_p = (p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1])
    area_g = (g[..., 2] - g[..., 0]) * (g[..., 3] - g[..., 1])
    union = area_p + area_g - inter
    hull_w = torch.maximum(p[..., 2], g[..., 2]) - torch.minimum(p[..., 0], g[..., 0])
    hull_h = torch.maximum(p[..., 3], g[..., 3]) - torch.minimum(p[..., 1], g[..., 1])
    return p, g, inter / (union + eps), union, hull_w, hull_h


def reference_generalized_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    _, _, iou, union, hull_w, hull_h = _geometry(boxes1, boxes2, eps)
    hull = hull_w * hull_h
    return _reduce(1 - (iou - (hull - union) / (hull + eps)), reduction)


def _diou_loss(boxes1, boxes2, eps):
    p, g, iou, _, hull_w, hull_h = _geometry(boxes1, boxes2, eps)
    dx = (p[..., 0] + p[..., 2]) / 2 - (g[..., 0] + g[..., 2]) / 2
    dy = (p[..., 1] + p[..., 3]) / 2 - (g[..., 1] + g[..., 3]) / 2
    return 1 - iou + (dx**2 + dy**2) / (hull_w**2 + hull_h**2 + eps), iou, p, g


def reference_distance_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    return _reduce(_diou_loss(boxes1, boxes2, eps)[0], reduction)


def reference_complete_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    diou, iou, p, g = _diou_loss(boxes1, boxes2, 1e-7)
    aspect_p = torch.atan((p[..., 2] - p[..., 0]) / (p[..., 3] - p[..., 1]))
    aspect_g = torch.atan((g[..., 2] - g[..., 0]) / (g[..., 3] - g[..., 1]))
    v = 4 / math.pi**2 * (aspect_g - aspect_p) ** 2
    alpha = (v / (1 - iou + v + eps)).detach()
    return _reduce(diou + alpha * v, reduction)


def random_pairs(n, generator, spread=100.0, size=40.0, integer=False):
    """n pairs of valid boxes, the second a perturbed copy of the first (most overlap);
    `integer` rounds coordinates so that many pairs tie in a corner coordinate."""
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * spread
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * size + 0.5
    jitter = (torch.rand(n, 4, generator=generator, dtype=torch.float64) - 0.5) * size / 2
    if integer:
        xy, wh, jitter = xy.round(), wh.round().clamp(min=1), jitter.round()
    boxes1 = torch.cat((xy, xy + wh), dim=1)
    boxes2 = boxes1 + jitter
    boxes2 = torch.cat((boxes2[:, :2], torch.maximum(boxes2[:, 2:], boxes2[:, :2] + 1)), dim=1)
    return boxes1, boxes2


def adversarial_pairs():
    """Pairs that stress every branch: identical, touching, nested, disjoint, empty,
    inverted, zero width or height, NaN, infinite, huge and tiny coordinates."""
    nan, inf = float("nan"), float("inf")
    pairs = [
        ([0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]),
        ([0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0]),
        ([0.0, 0.0, 10.0, 10.0], [2.0, 2.0, 5.0, 5.0]),
        ([0.0, 0.0, 10.0, 10.0], [30.0, 30.0, 40.0, 35.0]),
        ([5.0, 5.0, 5.0, 9.0], [0.0, 0.0, 10.0, 10.0]),
        ([5.0, 5.0, 9.0, 5.0], [5.0, 5.0, 9.0, 5.0]),
        ([3.0, 3.0, 3.0, 3.0], [3.0, 3.0, 3.0, 3.0]),
        ([8.0, 8.0, 2.0, 2.0], [0.0, 0.0, 10.0, 10.0]),
        ([nan, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]),
        ([0.0, 0.0, inf, 10.0], [0.0, 0.0, 10.0, 10.0]),
        ([-inf, -inf, inf, inf], [0.0, 0.0, 1.0, 1.0]),
        ([1e30, 1e30, 2e30, 2e30], [1e30, 1e30, 3e30, 3e30]),
        ([-1e6, -1e6, 1e6, 1e6], [0.0, 0.0, 1.0, 1.0]),
        ([1e-30, 1e-30, 2e-30, 2e-30], [1e-30, 1e-30, 2e-30, 3e-30]),
    ]
    return torch.tensor([p for p, _ in pairs], dtype=torch.float64), torch.tensor(
        [g for _, g in pairs], dtype=torch.float64
    )
