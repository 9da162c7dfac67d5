"""nms and batched_nms on CUDA against the same call on the CPU, in every dtype.

Tolerance: none, for every dtype. Both devices rank boxes with the same stable descending
sort (NaN first; then stably by class for batched_nms), compute every IoU in float32
(float64 for float64 input) with nms_math.h's functions, rounding each product on its own
on both, and compare it with the same threshold; so the kept indices must be identical,
order included. The ops return indices: there is no backward of their own to compare.
"""

import pytest
import torch
from nms_reference import clustered_boxes, random_boxes, sparse_boxes

import detops_nms
from detops_core.testing import assert_cuda_matches_cpu, float_dtypes, requires_cuda

pytestmark = requires_cuda()

LAYOUTS = {
    "random": lambda n, g: random_boxes(n, g),
    "clustered": clustered_boxes,
    "sparse": sparse_boxes,  # beyond float16's range: infinite coordinates in float16
}
THRESHOLDS = [0.0, 0.3, 0.5, 0.7, 1.0]


def _case(layout, n, ties, seed):
    g = torch.Generator().manual_seed(seed)
    boxes = LAYOUTS[layout](n, g)
    scores = torch.randint(0, 5, (n,), generator=g) / 4.0 if ties else torch.rand(n, generator=g)
    return boxes, scores, g


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("n", [1, 150, 5000])  # 5000: 79 tiles of 64 boxes
def test_nms(n, layout, ties, dtype):
    boxes, scores, _ = _case(layout, n, ties, seed=n + len(layout))
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    for thr in THRESHOLDS:
        cpu = detops_nms.nms(boxes, scores, thr)
        cuda = detops_nms.nms(boxes.cuda(), scores.cuda(), thr)
        assert_cuda_matches_cpu(cuda, cpu, what=f"nms, threshold {thr}")


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("classes", [1, 3, 80])
def test_batched_nms(classes, layout, ties, dtype):
    n = 3000
    boxes, scores, g = _case(layout, n, ties, seed=classes + len(layout))
    # Class labels anywhere in int64, negative ones included: only equality matters.
    idxs = torch.randint(0, classes, (n,), generator=g) * 7919 - 1000
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    for thr in THRESHOLDS:
        cpu = detops_nms.batched_nms(boxes, scores, idxs, thr)
        cuda = detops_nms.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), thr)
        assert_cuda_matches_cpu(cuda, cpu, what=f"batched_nms, threshold {thr}")


@pytest.mark.parametrize("dtype", float_dtypes())
def test_nan_and_infinite_input(dtype):
    """NaN scores rank first, NaN boxes never suppress nor are suppressed, infinite
    coordinates follow IEEE arithmetic: the same on both devices."""
    boxes, scores, g = _case("clustered", 700, False, seed=5)
    scores[::17] = float("nan")
    boxes[3::11, 0] = float("nan")
    boxes[5::13, 2] = float("inf")
    boxes[7::19, 1] = -float("inf")
    idxs = torch.randint(0, 3, (700,), generator=g)
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    for thr in (0.0, 0.5):
        cpu = detops_nms.nms(boxes, scores, thr)
        assert_cuda_matches_cpu(detops_nms.nms(boxes.cuda(), scores.cuda(), thr), cpu, what="nms")
        cpu = detops_nms.batched_nms(boxes, scores, idxs, thr)
        cuda = detops_nms.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), thr)
        assert_cuda_matches_cpu(cuda, cpu, what="batched_nms")


def test_non_contiguous_input():
    boxes, scores, g = _case("clustered", 400, True, seed=4)
    idxs = torch.randint(0, 3, (400,), generator=g)
    wide = torch.zeros(400, 9, device="cuda")
    wide[:, 1:9:2] = boxes.cuda()
    strided = wide[:, 1:9:2], torch.stack((scores, scores), dim=1).cuda()[:, 1]
    assert not strided[0].is_contiguous() and not strided[1].is_contiguous()
    assert_cuda_matches_cpu(detops_nms.nms(*strided, 0.5), detops_nms.nms(boxes, scores, 0.5), what="nms")
    cuda = detops_nms.batched_nms(*strided, idxs.cuda(), 0.5)
    assert_cuda_matches_cpu(cuda, detops_nms.batched_nms(boxes, scores, idxs, 0.5), what="batched_nms")
