"""FeaturePyramidNetwork and MultiScaleRoIAlign against torchvision (see tools/bench.py).
Workload: Mask R-CNN on an 800x1216 image, ResNet-50 channels, 256 FPN channels. Inputs
and parameters are made on the CPU, then moved to `device`: the same workload everywhere."""

from collections import OrderedDict

import torch
import torchvision.ops as tv_ops
import torchvision.ops.feature_pyramid_network as tv_fpn

import detops_fpn
from detops_core.testing import deterministically


def _pyramid(channels, height, width, batch, seed=0, grad=False, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (
            name,
            torch.randn(batch, c, height // 2 ** (i + 2), width // 2 ** (i + 2), generator=g)
            .to(device)
            .requires_grad_(grad),
        )
        for i, (name, c) in enumerate(zip(("0", "1", "2", "3"), channels))
    )


def _boxes(n, height, width, seed):
    g = torch.Generator().manual_seed(seed)
    size = torch.exp(torch.rand(n, 2, generator=g) * 5) * 4  # 4 .. 600 pixels: every level
    corner = torch.rand(n, 2, generator=g) * torch.tensor([width, height]) - size / 2
    return torch.cat((corner, corner + size), dim=1)


def cases(quick: bool, device: str = "cpu"):
    height, width = (256, 384) if quick else (800, 1216)
    boxes_per_image = 100 if quick else 1000

    feats = _pyramid([256, 512, 1024, 2048], height, width, batch=1, device=device)
    torch.manual_seed(0)
    ours = detops_fpn.FeaturePyramidNetwork([256, 512, 1024, 2048], 256, extra_blocks=detops_fpn.LastLevelMaxPool())
    theirs = tv_fpn.FeaturePyramidNetwork([256, 512, 1024, 2048], 256, extra_blocks=tv_fpn.LastLevelMaxPool())
    theirs.load_state_dict(ours.state_dict())
    ours.to(device)
    theirs.to(device)
    yield (
        "FeaturePyramidNetwork",
        f"ResNet-50 C2-C5, {height}x{width}, 1 image",
        lambda: ours(feats),
        lambda: theirs(feats),
    )

    levels = _pyramid([256] * 4, height, width, batch=2, seed=1, device=device)
    boxes = [_boxes(boxes_per_image, height, width, s).to(device) for s in (2, 3)]
    shapes = [(height, width)] * 2
    ours_pool = detops_fpn.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    theirs_pool = tv_ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    workload = f"4 levels x 256 ch, {height}x{width}, 2x{boxes_per_image} boxes, 7x7"
    yield (
        "MultiScaleRoIAlign",
        workload,
        lambda: ours_pool(levels, boxes, shapes),
        lambda: theirs_pool(levels, boxes, shapes),
    )

    grad_levels = _pyramid([256] * 4, height, width, batch=2, seed=1, grad=True, device=device)

    def fwd_bwd(pool):
        def run():
            out = pool(grad_levels, boxes, shapes)
            torch.autograd.grad(out.sum(), list(grad_levels.values()))

        return run

    yield ("MultiScaleRoIAlign forward+backward", workload, fwd_bwd(ours_pool), fwd_bwd(theirs_pool))
    if device == "cuda":  # what torch.use_deterministic_algorithms costs (the fixed-point backward)
        ours_fb = fwd_bwd(ours_pool)
        yield (
            "MultiScaleRoIAlign forward+backward deterministic",
            workload,
            deterministically(ours_fb),
            ours_fb,
            "detops atomics",
        )
