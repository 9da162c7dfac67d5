"""nms, batched_nms, nms_per_image and soft-NMS on CUDA against the same call on the CPU,
in every dtype.

Tolerance for the kept indices: none, for every dtype (soft-NMS's decayed scores: see the
comment above test_soft_nms). Both devices rank boxes with the same stable descending
sort (NaN first; then stably by class for batched_nms), compute every IoU in float32
(float64 for float64 input) with nms_math.h's functions, rounding each product on its own
on both, and compare it with the same threshold; so the kept indices must be identical,
order included. None of these ops has a backward of its own to compare.
"""

import pytest
import torch
from nms_reference import clustered_boxes, random_boxes, sparse_boxes

import detops_nms
from detops_core.testing import assert_cuda_matches_cpu, cpu_vs_cuda_tolerance, float_dtypes, requires_cuda

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


# ---------------------------------------------------------------------------------------
# max_output, nms_per_image: the same kernels, so indices identical as above.


@pytest.mark.parametrize("dtype", float_dtypes())
def test_max_output_and_per_image(dtype):
    boxes, scores, g = _case("clustered", 3000, True, seed=6)
    idxs = torch.randint(0, 80, (3000,), generator=g)
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    for k in (0, 1, 64, 100, 5000):
        cuda = detops_nms.nms(boxes.cuda(), scores.cuda(), 0.5, max_output=k)
        assert_cuda_matches_cpu(cuda, detops_nms.nms(boxes, scores, 0.5, max_output=k), what=f"nms, max_output {k}")
        cuda = detops_nms.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5, max_output=k)
        cpu = detops_nms.batched_nms(boxes, scores, idxs, 0.5, max_output=k)
        assert_cuda_matches_cpu(cuda, cpu, what=f"batched_nms, max_output {k}")
    b, s, i = boxes.reshape(6, 500, 4), scores.reshape(6, 500), idxs.reshape(6, 500)
    for classes in (None, i):
        for k in (None, 10):
            cuda = detops_nms.nms_per_image(
                b.cuda(), s.cuda(), 0.5, None if classes is None else classes.cuda(), max_output=k
            )
            cpu = detops_nms.nms_per_image(b, s, 0.5, classes, max_output=k)
            assert_cuda_matches_cpu(cuda, cpu, what=f"nms_per_image, max_output {k}")


# ---------------------------------------------------------------------------------------
# soft_nms / batched_soft_nms. Both devices compute the IoU with the same nms_math.h code
# and the weight in float64, but a GPU's double exp() is not glibc's: a gaussian weight may
# differ in its last bit (2^-52 relative), which a float32 score almost always rounds away
# and a float64 score keeps. Decayed scores are compared within 2 ulp of float64 and 1 ulp
# of float32 (plus the narrow type's rounding); indices must be identical, which holds
# unless two decayed scores sit within that distance (continuous random scores here).


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("n", [1, 300, 3000])
def test_soft_nms(n, layout, method, dtype):
    boxes, scores, g = _case(layout, n, False, seed=n + len(layout))
    idxs = torch.randint(0, 20, (n,), generator=g)
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    tol = cpu_vs_cuda_tolerance(dtype, float64=4.5e-16, float32=1.2e-7, narrow_ulps=1)
    cpu = detops_nms.soft_nms(boxes, scores, method=method)
    cuda = detops_nms.soft_nms(boxes.cuda(), scores.cuda(), method=method)
    assert_cuda_matches_cpu(cuda[0], cpu[0], what=f"soft_nms {method} indices")
    assert_cuda_matches_cpu(cuda[1], cpu[1], tol, what=f"soft_nms {method} scores")
    cpu = detops_nms.batched_soft_nms(boxes, scores, idxs, method=method)
    cuda = detops_nms.batched_soft_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), method=method)
    assert_cuda_matches_cpu(cuda[0], cpu[0], what=f"batched_soft_nms {method} indices")
    assert_cuda_matches_cpu(cuda[1], cpu[1], tol, what=f"batched_soft_nms {method} scores")
