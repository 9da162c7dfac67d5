"""Pure-PyTorch references of the pairwise GIoU / DIoU / CIoU, written from the definitions
(Rezatofighi et al. 2019; Zheng et al. 2020) in float64 with autograd, for when torchvision
is not installed, and the box sets the box-pair tests share."""

import math

import torch


def clamp_torchvision(x):
    """x.clamp(min=0) with the gradient torch 2.14 gives (torchvision 0.29.1's): none at
    exactly 0. Older torch passes it there, so the reference fixes the rule itself."""
    return torch.where(x == 0, x.detach(), x.clamp(min=0))


def clamp_passes_gradient_at_zero() -> bool:
    """Whether this torch's clamp(min=0) passes the gradient at exactly 0 (before 2.14)."""
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    x.clamp(min=0).sum().backward()
    return bool(x.grad[0] != 0)


def _parts(boxes1, boxes2):
    a, b = boxes1.double()[:, None, :], boxes2.double()[None, :, :]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    overlap_w = clamp_torchvision(torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0]))
    overlap_h = clamp_torchvision(torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1]))
    inter = overlap_w * overlap_h
    union = area_a + area_b - inter
    hull_w = clamp_torchvision(torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0]))
    hull_h = clamp_torchvision(torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1]))
    return a, b, inter / union, union, hull_w, hull_h


def reference_generalized_box_iou(boxes1, boxes2):
    _, _, iou, union, hull_w, hull_h = _parts(boxes1, boxes2)
    hull = hull_w * hull_h
    return iou - (hull - union) / hull


def _diou(boxes1, boxes2, eps):
    a, b, iou, _, hull_w, hull_h = _parts(boxes1, boxes2)
    centre_dx = (a[..., 0] + a[..., 2]) / 2 - (b[..., 0] + b[..., 2]) / 2
    centre_dy = (a[..., 1] + a[..., 3]) / 2 - (b[..., 1] + b[..., 3]) / 2
    return iou - (centre_dx**2 + centre_dy**2) / (hull_w**2 + hull_h**2 + eps), iou, a, b


def reference_distance_box_iou(boxes1, boxes2, eps=1e-7):
    return _diou(boxes1, boxes2, eps)[0]


def reference_complete_box_iou(boxes1, boxes2, eps=1e-7):
    diou, iou, a, b = _diou(boxes1, boxes2, eps)
    aspect_a = torch.atan((a[..., 2] - a[..., 0]) / (a[..., 3] - a[..., 1]))
    aspect_b = torch.atan((b[..., 2] - b[..., 0]) / (b[..., 3] - b[..., 1]))
    v = 4 / math.pi**2 * (aspect_a - aspect_b) ** 2
    alpha = (v / (1 - iou + v + eps)).detach()  # a constant to the gradient, by definition
    return diou - alpha * v


def random_boxes(n, generator, spread=100.0, size=40.0, integer=False):
    """n valid boxes; `integer` rounds the coordinates so that many pairs share a corner
    coordinate (ties of torch.maximum / minimum)."""
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * spread
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * size + 0.5
    if integer:
        xy, wh = xy.round(), wh.round().clamp(min=1)
    return torch.cat((xy, xy + wh), dim=1)


def adversarial_boxes():
    """Rows that stress every branch: identical, touching, nested, empty, inverted, zero
    width or height, a point, NaN, infinite and huge coordinates."""
    nan, inf = float("nan"), float("inf")
    rows = [
        [0.0, 0.0, 10.0, 10.0],
        [0.0, 0.0, 10.0, 10.0],  # identical to the first
        [10.0, 0.0, 20.0, 10.0],  # touches the first along x = 10
        [2.0, 2.0, 5.0, 5.0],  # inside the first
        [30.0, 30.0, 40.0, 35.0],  # disjoint
        [5.0, 5.0, 5.0, 9.0],  # zero width
        [5.0, 5.0, 9.0, 5.0],  # zero height
        [3.0, 3.0, 3.0, 3.0],  # a point
        [8.0, 8.0, 2.0, 2.0],  # inverted
        [nan, 0.0, 10.0, 10.0],
        [0.0, 0.0, inf, 10.0],
        [-inf, -inf, inf, inf],
        [1e30, 1e30, 2e30, 2e30],  # huge: products overflow float32
        [-1e6, -1e6, 1e6, 1e6],
        [1e-30, 1e-30, 2e-30, 2e-30],  # tiny
    ]
    return torch.tensor(rows, dtype=torch.float64)
