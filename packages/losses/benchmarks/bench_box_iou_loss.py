"""generalized_box_iou_loss, distance_box_iou_loss and complete_box_iou_loss, forward and
backward (both box sets' gradients), against torchvision 0.29.1's autograd through its
tensor formulas (see tools/bench.py): 100,000 pairs of predicted and target boxes, float32,
reduction "mean" (the training case) and "none" (with a random upstream gradient)."""

import torch

import detops_losses

NAMES = ("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss")


def _pairs(n, device):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=g) * 800
    wh = torch.rand(n, 2, generator=g) * 200 + 4
    target = torch.cat((xy, xy + wh), 1)
    pred = target + (torch.rand(n, 4, generator=g) - 0.5) * wh.repeat(1, 2) * 0.5
    return pred.to(device), target.to(device)


def _forward_backward(fn, pred, target, reduction, grad):
    def run():
        a, b = pred.detach().requires_grad_(), target.detach().requires_grad_()
        loss = fn(a, b, reduction=reduction)
        torch.autograd.backward(loss, grad if reduction == "none" else None)
        return loss, a.grad, b.grad

    return run


def cases(quick: bool, device: str = "cpu"):
    import torchvision.ops as tv

    n = 10_000 if quick else 100_000
    pred, target = _pairs(n, device)
    grad = torch.randn(n, generator=torch.Generator().manual_seed(1)).to(device)
    for reduction in ("mean", "none"):
        for name in NAMES:
            ours = _forward_backward(getattr(detops_losses, name), pred, target, reduction, grad)
            theirs = _forward_backward(getattr(tv, name), pred, target, reduction, grad)
            for x, y in zip(ours(), theirs()):
                torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)
            # "backward" in the op's name: tools/bench.py times it with gradients enabled.
            yield (f"{name} forward+backward {reduction}", f"{n:,} box pairs, float32", ours, theirs)
