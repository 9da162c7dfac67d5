"""box_iou_rotated and nms_rotated (issue 15) on RPN-like proposals given random angles (see
tools/bench.py). torchvision has no rotated IoU or NMS kernel, so each case names its baseline:
a vectorised pure-PyTorch rotated IoU (the alternative users have: candidate vertices of
the intersection, sorted by angle, shoelace area; in float64) and a greedy NMS loop on it;
and, at r = 0, detops' axis-aligned box_iou / nms on the same boxes (the cost of rotation).
"""

import torch

import detops_nms
from detops_nms._workloads import rpn_proposals


def _corners(boxes):
    cx, cy, w, h, r = boxes.unbind(-1)
    rad = r * (torch.pi / 180)
    c, s = torch.cos(rad), torch.sin(rad)
    u = torch.stack((c, -s), -1) * (w / 2)[..., None]
    v = torch.stack((s, c), -1) * (h / 2)[..., None]
    centre = torch.stack((cx, cy), -1)
    return torch.stack((centre - u - v, centre + u - v, centre + u + v, centre - u + v), -2)


def _cross(a, b):
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _inside(points, poly):
    # points [..., P, 2] inside (or on) the counter-clockwise quadrilateral poly [..., 4, 2]
    edge = poly.roll(-1, -2) - poly
    rel = points[..., :, None, :] - poly[..., None, :, :]
    return (_cross(edge[..., None, :, :], rel) >= 0).all(-1)


def _paired_iou(a, b, area_a, area_b):
    """IoU of aligned pairs: corners a, b [P, 4, 2], areas [P]."""
    # Every edge of a against every edge of b: [P, 4, 4] parameters along each.
    p, r = a[:, :, None, :], (a.roll(-1, -2) - a)[:, :, None, :]
    q, s = b[:, None, :, :], (b.roll(-1, -2) - b)[:, None, :, :]
    denom = _cross(r, s)
    t = _cross(q - p, s) / denom
    u = _cross(q - p, r) / denom
    hit = (denom != 0) & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
    crossings = torch.where(hit[..., None], p + t[..., None] * r, torch.zeros_like(p + q)).flatten(1, 2)
    pts = torch.cat((a, b, crossings), 1)
    valid = torch.cat((_inside(a, b), _inside(b, a), hit.flatten(1)), 1)
    count = valid.sum(1, keepdim=True).clamp(min=1)
    centre = (pts * valid[..., None]).sum(1) / count
    angle = torch.atan2(pts[..., 1] - centre[:, None, 1], pts[..., 0] - centre[:, None, 0])
    angle = torch.where(valid, angle, torch.full_like(angle, 10.0))  # unused slots sort last
    order = angle.argsort(1)
    pts = pts.gather(1, order[..., None].expand_as(pts))
    ok = valid.gather(1, order)
    pts = torch.where(ok[..., None], pts, pts[:, :1, :])  # unused slots repeat the first
    rel = pts - centre[:, None, :]
    inter = (_cross(rel, rel.roll(-1, 1)).sum(1) / 2).clamp(min=0)
    return inter / (area_a + area_b - inter)


def torch_box_iou_rotated(boxes1, boxes2):
    """Pairwise rotated IoU [N, M] with tensor operations: pairs whose circumscribed circles
    meet are found first, and only those are intersected (float64)."""
    b1, b2 = boxes1.double(), boxes2.double()
    reach = (b1[:, None, 2:4].square().sum(-1).sqrt() + b2[None, :, 2:4].square().sum(-1).sqrt()) / 2
    near = torch.cdist(b1[:, :2], b2[:, :2]) <= reach * (1 + 1e-6)
    i, j = near.nonzero(as_tuple=True)
    out = torch.zeros(len(b1), len(b2), dtype=torch.float64, device=boxes1.device)
    ca, cb = _corners(b1), _corners(b2)
    area_a, area_b = b1[:, 2] * b1[:, 3], b2[:, 2] * b2[:, 3]
    for k in range(0, len(i), 1 << 16):  # bounded memory: 64k pairs at a time
        ii, jj = i[k : k + (1 << 16)], j[k : k + (1 << 16)]
        out[ii, jj] = _paired_iou(ca[ii], cb[jj], area_a[ii], area_b[jj])
    return out.to(boxes1.dtype)


def torch_nms_rotated(boxes, scores, iou_threshold: float):
    """Greedy NMS: take the best remaining box, drop the rest whose IoU with it is above
    the threshold (one vectorised IoU row per kept box)."""
    order = torch.argsort(scores, descending=True, stable=True)
    keep = []
    while order.numel() > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iou = torch_box_iou_rotated(boxes[i : i + 1], boxes[rest])[0]
        order = rest[~(iou > iou_threshold)]
    return torch.stack(keep) if keep else order


def rotated_proposals(n: int, angle: bool = True, seed: int = 0):
    """RPN-like proposals as cxcywhr with an angle in [-45, 45) (or 0), and their scores."""
    xyxy, scores = rpn_proposals(n, seed=seed)
    cxcywh = detops_nms.box_convert(xyxy, "xyxy", "cxcywh")
    g = torch.Generator().manual_seed(seed + 1)
    r = torch.rand(n, 1, generator=g) * 90 - 45 if angle else torch.zeros(n, 1)
    return torch.cat((cxcywh, r), 1), scores, xyxy


def cases(quick: bool, device: str = "cpu"):
    n = 300 if quick else 1000
    boxes, _, xyxy = (t.to(device) for t in rotated_proposals(n))
    torch.testing.assert_close(
        detops_nms.box_iou_rotated(boxes, boxes), torch_box_iou_rotated(boxes, boxes), rtol=0, atol=1e-5
    )
    yield (
        "box_iou_rotated",
        f"{n}x{n} RPN-like proposals, angles in [-45, 45)",
        lambda b=boxes: detops_nms.box_iou_rotated(b, b),
        lambda b=boxes: torch_box_iou_rotated(b, b),
        "vectorised PyTorch rotated IoU",
    )
    flat, _, xyxy = (t.to(device) for t in rotated_proposals(n, angle=False))
    yield (
        "box_iou_rotated r=0",
        f"{n}x{n} RPN-like proposals, r = 0",
        lambda b=flat: detops_nms.box_iou_rotated(b, b),
        lambda b=xyxy: detops_nms.box_iou(b, b),
        "detops box_iou (axis-aligned)",
    )
    for n in (1000,) if quick else (5000, 20000):
        boxes, scores, _ = (t.to(device) for t in rotated_proposals(n))
        kept = detops_nms.nms_rotated(boxes, scores, 0.7)
        workload = f"{n} RPN-like proposals, angles in [-45, 45), IoU 0.7 ({len(kept)} kept)"
        if n <= 5000:
            # The PyTorch loop costs one vectorised IoU row per kept box: minutes per call
            # at 20000 boxes, too slow to time in rounds; 20000 is timed against r = 0 only.
            assert torch.equal(kept, torch_nms_rotated(boxes, scores, 0.7))
            yield (
                "nms_rotated",
                workload,
                lambda b=boxes, s=scores: detops_nms.nms_rotated(b, s, 0.7),
                lambda b=boxes, s=scores: torch_nms_rotated(b, s, 0.7),
                "greedy PyTorch loop on the vectorised IoU",
            )
        flat, scores, xyxy = (t.to(device) for t in rotated_proposals(n, angle=False))
        yield (
            "nms_rotated r=0",
            f"{n} RPN-like proposals, r = 0, IoU 0.7",
            lambda b=flat, s=scores: detops_nms.nms_rotated(b, s, 0.7),
            lambda b=xyxy, s=scores: detops_nms.nms(b, s, 0.7),
            "detops nms (axis-aligned)",
        )
