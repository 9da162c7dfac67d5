"""soft-NMS, max_output and per-image NMS (issue 16) on RPN-like proposals (see
tools/bench.py). torchvision has none of them, so each case names its baseline: a vectorised
pure-PyTorch soft-NMS (the alternative users have), the unlimited nms, and a Python loop
over batched_nms."""

import torch

import detops_nms
from detops_nms._workloads import detections, rpn_proposals


def torch_soft_nms(boxes, scores, sigma: float = 0.5, score_threshold: float = 0.001):
    """Gaussian soft-NMS with tensor operations: one argmax and one vectorised decay of all
    remaining boxes per selected box, dropped boxes removed as it goes."""
    boxes = boxes.float()
    scores = scores.float().clone()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    index = torch.arange(len(boxes), device=boxes.device)
    live = scores >= score_threshold
    boxes, scores, area, index = boxes[live], scores[live], area[live], index[live]
    keep, kept = [], []
    while scores.numel() > 0:
        i = torch.argmax(scores)
        keep.append(index[i])
        kept.append(scores[i])
        b = boxes[i]
        w = (torch.minimum(b[2], boxes[:, 2]) - torch.maximum(b[0], boxes[:, 0])).clamp(min=0)
        h = (torch.minimum(b[3], boxes[:, 3]) - torch.maximum(b[1], boxes[:, 1])).clamp(min=0)
        inter = w * h
        iou = inter / (area[i] + area - inter)
        scores = scores * torch.exp(-(iou * iou) / sigma)
        live = scores >= score_threshold
        live[i] = False
        boxes, scores, area, index = boxes[live], scores[live], area[live], index[live]
    if not keep:
        return index, scores
    return torch.stack(keep), torch.stack(kept)


def _loop_batched_nms(boxes, scores, idxs, threshold):
    rows = []
    for image in range(boxes.shape[0]):
        keep = detops_nms.batched_nms(boxes[image], scores[image], idxs[image], threshold)
        rows.append(torch.stack((torch.full_like(keep, image), keep), dim=1))
    return torch.cat(rows)


def cases(quick: bool, device: str = "cpu"):
    sizes = (1000,) if quick else (5000, 20000)
    for n in sizes:
        boxes, scores = (t.to(device) for t in rpn_proposals(n))
        ours, theirs = detops_nms.soft_nms(boxes, scores), torch_soft_nms(boxes, scores)
        # The baseline's float32 exp may differ in the last bit: the first selections agree.
        assert torch.equal(ours[0][:20], theirs[0][:20]) and abs(len(ours[0]) - len(theirs[0])) <= len(ours[0]) // 100
        yield (
            "soft_nms (gaussian)",
            f"{n} RPN-like proposals, sigma 0.5 ({len(ours[0])} kept)",
            lambda b=boxes, s=scores: detops_nms.soft_nms(b, s),
            lambda b=boxes, s=scores: torch_soft_nms(b, s),
            "vectorised PyTorch soft-NMS",
        )
    n = sizes[-1]
    boxes, scores = (t.to(device) for t in rpn_proposals(n))
    full = detops_nms.nms(boxes, scores, 0.7)
    assert torch.equal(detops_nms.nms(boxes, scores, 0.7, max_output=100), full[:100])
    yield (
        "nms max_output=100",
        f"{n} RPN-like proposals, IoU 0.7 ({len(full)} kept unlimited)",
        lambda b=boxes, s=scores: detops_nms.nms(b, s, 0.7, max_output=100),
        lambda b=boxes, s=scores: detops_nms.nms(b, s, 0.7),
        "detops nms without max_output",
    )
    images, per_image = (4, 1000) if quick else (16, 5000)
    batch = [detections(per_image, seed=i) for i in range(images)]
    boxes, scores, idxs = (torch.stack(t).to(device) for t in zip(*batch))
    assert torch.equal(detops_nms.nms_per_image(boxes, scores, 0.5, idxs), _loop_batched_nms(boxes, scores, idxs, 0.5))
    yield (
        "nms_per_image",
        f"{images} images x {per_image} boxes, 80 classes, IoU 0.5",
        lambda b=boxes, s=scores, c=idxs: detops_nms.nms_per_image(b, s, 0.5, c),
        lambda b=boxes, s=scores, c=idxs: _loop_batched_nms(b, s, c, 0.5),
        "Python loop over batched_nms",
    )
