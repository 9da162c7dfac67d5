"""MultiScaleRoIAlign and LevelMapper on boxes with a negative, NaN or infinite area: a
defined level (or none), torchvision's values, and no multi-second stall."""

from collections import OrderedDict

import pytest
import torch

import detops_fpn
import detops_roi
from detops_core.testing import run_isolated, torchvision_ops
from detops_fpn.poolers import LevelMapper

tv_poolers = torchvision_ops() and torchvision_ops().poolers

NAMES = ["p2", "p3", "p4", "p5"]
NAN = float("nan")
INF = float("inf")
UNUSUAL = torch.tensor(
    [
        [50.0, 10.0, 40.0, 30.0],  # negative width: negative area
        [10.0, 30.0, 40.0, 10.0],  # negative height
        [NAN, 10.0, 40.0, 30.0],
        [10.0, 10.0, INF, 60.0],  # infinite area: the last level
        [10.0, 10.0, 10.0, 60.0],  # zero area: the first level
        [10.0, 10.0, 60.0, 60.0],  # an ordinary box
    ]
)


def _features(seed=0):
    g = torch.Generator().manual_seed(seed)
    return OrderedDict((n, torch.randn(1, 3, 64 // 2**i, 64 // 2**i, generator=g)) for i, n in enumerate(NAMES))


def test_level_mapper_defines_every_box():
    levels = LevelMapper(2, 5)([UNUSUAL])
    assert levels.tolist() == [-1, -1, -1, 3, 0, 0]


@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_unusual_rows_match_the_definition(sampling_ratio):
    feats = _features()
    pooler = detops_fpn.MultiScaleRoIAlign(NAMES, 5, sampling_ratio)
    out = pooler(feats, [UNUSUAL], [(256, 256)])
    # Boxes without a level give zero rows; the others equal roi_align on their level.
    assert torch.count_nonzero(out[:3]) == 0
    for row, level in ((3, 3), (4, 0), (5, 0)):
        fmap, scale = feats[NAMES[level]], pooler.scales[level]
        rois = torch.cat((torch.zeros(1, 1), UNUSUAL[row : row + 1]), dim=1)
        expected = detops_roi.roi_align(fmap, rois, 5, scale, sampling_ratio)
        torch.testing.assert_close(out[row : row + 1], expected, rtol=0, atol=0)


@pytest.mark.skipif(tv_poolers is None, reason="torchvision is not installed (the oracle)")
def test_unusual_rows_match_torchvision():
    feats = _features()
    # Not the infinite box: torchvision's roi_align crashes on it (SIGSEGV).
    boxes = UNUSUAL[[0, 1, 2, 4, 5]]
    ours = detops_fpn.MultiScaleRoIAlign(NAMES, 5, 2)(feats, [boxes], [(256, 256)])
    theirs = tv_poolers.MultiScaleRoIAlign(NAMES, 5, 2)(feats, [boxes], [(256, 256)])
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_unusual_rows_get_no_gradient():
    feats = OrderedDict((k, v.requires_grad_(True)) for k, v in _features().items())
    out = detops_fpn.MultiScaleRoIAlign(NAMES, 5, 2)(feats, [UNUSUAL[:3]], [(256, 256)])
    out.sum().backward()
    for v in feats.values():
        assert torch.count_nonzero(v.grad) == 0


def test_infinite_box_with_adaptive_sampling_is_fast():
    # Used to visit 2^30 samples per bin (about 12 s); in a child so a regression cannot stall the run.
    out = run_isolated(
        """
import time, torch, detops_fpn
from collections import OrderedDict
feats = OrderedDict((n, torch.randn(1, 3, 64 // 2**i, 64 // 2**i, requires_grad=True))
                    for i, n in enumerate(["p2", "p3", "p4", "p5"]))
boxes = [torch.tensor([[10.0, 10.0, float("inf"), 60.0], [-3e38, 0.0, 3e38, 20.0]])]
pooler = detops_fpn.MultiScaleRoIAlign(list(feats), 7, -1)
start = time.perf_counter()
out = pooler(feats, boxes, [(256, 256)])
out.sum().backward()
print(time.perf_counter() - start)
assert torch.count_nonzero(out) == 0
""",
        timeout=60,
    )
    assert float(out) < 1.0, f"took {out} s"
