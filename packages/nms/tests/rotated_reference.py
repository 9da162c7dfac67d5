"""References for the rotated-box ops, written from the definitions.

A cxcywhr box (cx, cy, w, h, r) is the rectangle with corners c -/+ (w/2) u -/+ (h/2) v,
u = (cos r, -sin r), v = (sin r, cos r), r in degrees (the polygon torchvision's
box_convert(..., "cxcywhr", "xyxyxyxy") gives; tests check that). The corners are computed
in float64 with math.cos/math.sin; from there everything is exact: the intersection of the
two convex quadrilaterals is clipped in rational arithmetic (fractions.Fraction), so the
only rounding between a box's numbers and its reference IoU is the corners' float64
trigonometry.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch


def corners(box) -> list:
    """The four corners (x, y) of one cxcywhr box, in float64, in torchvision's xyxyxyxy order
    (top-left, top-right, bottom-right, bottom-left of the unrotated box)."""
    cx, cy, w, h, r = (float(v) for v in box)
    rad = r * math.pi / 180.0
    ux, uy = math.cos(rad), -math.sin(rad)
    vx, vy = math.sin(rad), math.cos(rad)
    hw, hh = w / 2, h / 2
    return [
        (cx - hw * ux - hh * vx, cy - hw * uy - hh * vy),
        (cx + hw * ux - hh * vx, cy + hw * uy - hh * vy),
        (cx + hw * ux + hh * vx, cy + hw * uy + hh * vy),
        (cx - hw * ux + hh * vx, cy - hw * uy + hh * vy),
    ]


def _signed_area(poly) -> Fraction:
    s = Fraction(0)
    for i in range(len(poly)):
        (x0, y0), (x1, y1) = poly[i], poly[(i + 1) % len(poly)]
        s += x0 * y1 - x1 * y0
    return s / 2


def _exact_ccw(pts) -> list:
    poly = [(Fraction(x), Fraction(y)) for x, y in pts]
    return poly if _signed_area(poly) >= 0 else poly[::-1]


def _clip(poly, a, b) -> list:
    """The part of convex polygon `poly` left of (or on) the directed line a -> b."""
    dx, dy = b[0] - a[0], b[1] - a[1]

    def side(p):
        return dx * (p[1] - a[1]) - dy * (p[0] - a[0])

    out = []
    for i in range(len(poly)):
        prev, cur = poly[i - 1], poly[i]
        sp, sc = side(prev), side(cur)
        if (sp < 0 < sc) or (sc < 0 < sp):
            t = sp / (sp - sc)
            out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
        if sc >= 0:
            out.append(cur)
    return out


def exact_iou(box_a, box_b) -> Fraction:
    """IoU of two cxcywhr boxes, exact given their float64 corners; 0 when both have zero
    area. NaN (as a float) when a number is not finite."""
    if not all(math.isfinite(float(v)) for v in (*box_a, *box_b)):
        return math.nan
    pa, pb = _exact_ccw(corners(box_a)), _exact_ccw(corners(box_b))
    area_a, area_b = abs(_signed_area(pa)), abs(_signed_area(pb))
    inter_poly = pa
    for i in range(4):
        if not inter_poly:
            break
        inter_poly = _clip(inter_poly, pb[i], pb[(i + 1) % 4])
    inter = _signed_area(inter_poly) if len(inter_poly) >= 3 else Fraction(0)
    union = area_a + area_b - inter
    return inter / union if union > 0 else Fraction(0)


def iou_matrix(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """exact_iou of every pair, rounded to float64 ([N, M])."""
    b1, b2 = boxes1.double().tolist(), boxes2.double().tolist()
    return torch.tensor([[float(exact_iou(a, b)) for b in b2] for a in b1], dtype=torch.float64).reshape(
        len(b1), len(b2)
    )


def score_order(scores: torch.Tensor) -> list:
    """Indices by decreasing score, NaN first, ties in input order."""
    s = scores.double().tolist()
    return sorted(range(len(s)), key=lambda i: (0 if math.isnan(s[i]) else 1, -s[i] if not math.isnan(s[i]) else 0, i))


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, idxs=None) -> torch.Tensor:
    """Greedy NMS: in score order, keep a box unless a kept box of the same class has an
    exact IoU with it strictly above iou_threshold (a NaN IoU never suppresses)."""
    b = boxes.double().tolist()
    cls = [0] * len(b) if idxs is None else idxs.tolist()
    threshold = Fraction(iou_threshold)
    kept = []
    for i in score_order(scores):
        suppressed = False
        for k in kept:
            if cls[k] != cls[i]:
                continue
            v = exact_iou(b[k], b[i])
            if isinstance(v, Fraction) and v > threshold:
                suppressed = True
                break
        if not suppressed:
            kept.append(i)
    return torch.tensor(kept, dtype=torch.int64)


def margin_to(boxes: torch.Tensor, iou_threshold: float) -> float:
    """The smallest |IoU - threshold| over all pairs (how close a case is to a tie)."""
    m = iou_matrix(boxes, boxes)
    m.fill_diagonal_(math.inf)
    return float((m - iou_threshold).abs().nan_to_num(math.inf).min()) if len(boxes) > 1 else math.inf


def random_rotated(n: int, g: torch.Generator, spread: float = 40.0, size: float = 20.0) -> torch.Tensor:
    """n cxcywhr boxes, centres in [0, spread)^2, sides in (1, size), any angle in
    [-180, 180): many overlaps, some nested, some disjoint."""
    c = torch.rand(n, 2, generator=g, dtype=torch.float64) * spread
    wh = 1 + torch.rand(n, 2, generator=g, dtype=torch.float64) * (size - 1)
    r = torch.rand(n, 1, generator=g, dtype=torch.float64) * 360 - 180
    return torch.cat((c, wh, r), dim=1)
