"""Pairwise generalized_box_iou, distance_box_iou and complete_box_iou, forward and backward
(the gradient of both box sets for a random upstream gradient), against torchvision 0.29.1's
autograd through its tensor formulas (see tools/bench.py). Boxes: RPN-like proposals."""

import torch

import detops_nms
from detops_nms._workloads import rpn_proposals

NAMES = ("generalized_box_iou", "distance_box_iou", "complete_box_iou")


def _forward_backward(fn, boxes1, boxes2, grad):
    def run():
        a, b = boxes1.detach().requires_grad_(), boxes2.detach().requires_grad_()
        out = fn(a, b)
        torch.autograd.backward(out, grad)
        return out, a.grad, b.grad

    return run


def cases(quick: bool, device: str = "cpu"):
    import torchvision.ops as tv

    n = 300 if quick else 1000
    boxes = rpn_proposals(n, seed=0)[0].to(device)
    boxes1, boxes2 = boxes, boxes.flip(0).contiguous()
    grad = torch.randn(n, n, generator=torch.Generator().manual_seed(1)).to(device)
    for name in NAMES:
        ours = _forward_backward(getattr(detops_nms, name), boxes1, boxes2, grad)
        theirs = _forward_backward(getattr(tv, name), boxes1, boxes2, grad)
        for x, y in zip(ours(), theirs()):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
        # "backward" in the op's name: tools/bench.py times it with gradients enabled.
        yield (f"{name} forward+backward", f"{n}x{n} RPN-like proposals, float32", ours, theirs)
