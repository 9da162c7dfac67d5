"""nms and batched_nms against torchvision on RPN-like proposals (see tools/bench.py).
The inputs are made on the CPU, then moved to `device`: the same workload everywhere."""

import torch
import torchvision

import detops_nms
from detops_nms._workloads import detections, rpn_proposals


def cases(quick: bool, device: str = "cpu"):
    sizes = (1000,) if quick else (5000, 20000)
    for n in sizes:
        boxes, scores = (t.to(device) for t in rpn_proposals(n))
        assert torch.equal(detops_nms.nms(boxes, scores, 0.7), torchvision.ops.nms(boxes, scores, 0.7))
        yield (
            "nms",
            f"{n} RPN-like proposals, IoU 0.7",
            lambda b=boxes, s=scores: detops_nms.nms(b, s, 0.7),
            lambda b=boxes, s=scores: torchvision.ops.nms(b, s, 0.7),
        )
    for n in sizes:
        boxes, scores, labels = (t.to(device) for t in detections(n))
        ours = detops_nms.batched_nms(boxes, scores, labels, 0.5)
        theirs = torchvision.ops.batched_nms(boxes, scores, labels, 0.5)
        # torchvision orders equal scores arbitrarily (unstable sort): compare as sets.
        assert set(ours.tolist()) == set(theirs.tolist()) and torch.equal(scores[ours], scores[theirs])
        yield (
            "batched_nms",
            f"{n} boxes, 80 classes, IoU 0.5",
            lambda b=boxes, s=scores, c=labels: detops_nms.batched_nms(b, s, c, 0.5),
            lambda b=boxes, s=scores, c=labels: torchvision.ops.batched_nms(b, s, c, 0.5),
        )
