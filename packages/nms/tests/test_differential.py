"""detops nms / batched_nms against the oracles (reference, and torchvision when present)."""

import pytest
import torch
from nms_reference import clustered_boxes, oracle_keep, random_boxes, same_ordering, sparse_boxes

import detops_nms
from detops_core.testing import devices, oracles

LAYOUTS = {
    "random": lambda n, g: random_boxes(n, g),
    "clustered": clustered_boxes,
    "sparse": sparse_boxes,
}
THRESHOLDS = [0.0, 0.5, 0.7, 1.0]


def _scores(n, g, ties):
    if ties:  # only 5 distinct values: lots of exact ties
        return torch.randint(0, 5, (n,), generator=g).float() / 4
    return torch.rand(n, generator=g)


def _kept(fn, boxes, *args):
    """fn's kept indices, on the CPU, after checking they came back on the boxes' device."""
    keep = fn(boxes, *args)
    assert keep.device == boxes.device and keep.dtype == torch.int64
    return keep.cpu()


@pytest.mark.parametrize("oracle", oracles("nms"))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("n", [1, 7, 300])
@pytest.mark.parametrize("device", devices())
def test_nms_matches_oracle(oracle, layout, threshold, ties, n, device):
    g = torch.Generator().manual_seed(n * 31 + int(threshold * 10))
    boxes = LAYOUTS[layout](n, g).to(device)
    scores = _scores(n, g, ties).to(device)
    expected = oracle_keep("nms", oracle, boxes, scores, threshold)
    assert torch.equal(_kept(detops_nms.nms, boxes, scores, threshold), expected)


@pytest.mark.parametrize("oracle", oracles("batched_nms"))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("classes", [1, 3, 80])
@pytest.mark.parametrize("device", devices())
def test_batched_nms_matches_oracle(oracle, layout, threshold, ties, classes, device):
    n = 400
    g = torch.Generator().manual_seed(classes * 7 + int(threshold * 10))
    boxes = LAYOUTS[layout](n, g).to(device)
    scores = _scores(n, g, ties).to(device)
    idxs = torch.randint(0, classes, (n,), generator=g).to(device)
    ours = _kept(detops_nms.batched_nms, boxes, scores, idxs, threshold)
    expected = oracle_keep("batched_nms", oracle, boxes, scores, idxs, threshold)
    if oracle == "reference":  # the reference orders ties stably, as detops promises
        assert torch.equal(ours, expected)
    else:
        assert same_ordering(ours, expected, scores.cpu())


@pytest.mark.parametrize("oracle", oracles("nms"))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("device", devices())
def test_other_dtypes(oracle, dtype, device):
    g = torch.Generator().manual_seed(3)
    boxes = clustered_boxes(500, g).to(device, dtype)
    scores = torch.rand(500, generator=g).to(device, dtype)
    idxs = torch.randint(0, 4, (500,), generator=g).to(device)
    # float16/bfloat16 are computed in float32 from the narrow values.
    expected = oracle_keep("nms", oracle, boxes, scores, 0.5)
    assert torch.equal(_kept(detops_nms.nms, boxes, scores, 0.5), expected)
    ours = _kept(detops_nms.batched_nms, boxes, scores, idxs, 0.5)
    assert same_ordering(ours, oracle_keep("batched_nms", oracle, boxes, scores, idxs, 0.5), scores.cpu().float())


@pytest.mark.parametrize("device", devices())
def test_non_contiguous_inputs(device):
    g = torch.Generator().manual_seed(4)
    boxes = clustered_boxes(300, g).to(device)
    scores = torch.rand(300, generator=g).to(device)
    idxs = torch.randint(0, 3, (300,), generator=g).to(device)
    wide = torch.zeros(300, 9, device=device)
    wide[:, 1:9:2] = boxes  # boxes as a strided view: stride (9, 2)
    strided_boxes = wide[:, 1:9:2]
    strided_scores = torch.stack((scores, scores), dim=1)[:, 0]
    strided_idxs = torch.stack((idxs, idxs), dim=1)[:, 1]
    assert not strided_boxes.is_contiguous() and not strided_scores.is_contiguous()
    assert torch.equal(detops_nms.nms(strided_boxes, strided_scores, 0.5), detops_nms.nms(boxes, scores, 0.5))
    assert torch.equal(
        detops_nms.batched_nms(strided_boxes, strided_scores, strided_idxs, 0.5),
        detops_nms.batched_nms(boxes, scores, idxs, 0.5),
    )


@pytest.mark.parametrize("device", devices())
def test_empty_input_returns_empty_int64(device):
    empty = torch.zeros(0, 4, device=device), torch.zeros(0, device=device)
    for fn, args in (
        (detops_nms.nms, (*empty, 0.5)),
        (detops_nms.batched_nms, (*empty, torch.zeros(0, dtype=torch.int64, device=device), 0.5)),
    ):
        out = fn(*args)
        assert out.dtype == torch.int64 and out.shape == (0,) and out.device.type == device


@pytest.mark.parametrize("oracle", oracles("nms"))
@pytest.mark.parametrize("device", devices())
def test_nan_and_inf_match_oracle(oracle, device):
    """NaN scores rank first; NaN boxes never suppress and are never suppressed; infinite
    coordinates follow IEEE arithmetic exactly as torchvision's kernel does."""
    g = torch.Generator().manual_seed(5)
    boxes = clustered_boxes(200, g)
    scores = torch.rand(200, generator=g)
    scores[::17] = float("nan")
    boxes[3::11, 0] = float("nan")
    boxes[5::13, 2] = float("inf")
    boxes[7::19, 1] = -float("inf")
    idxs = torch.randint(0, 3, (200,), generator=g)
    boxes, scores, idxs = boxes.to(device), scores.to(device), idxs.to(device)
    for thr in (0.0, 0.5):
        # torchvision's CPU kernel is the contract here on every device: its CUDA kernel
        # takes CUDA's max/min (fmaxf/fminf, which drop a NaN operand) where the CPU kernel
        # takes std::max/std::min, so the oracle always sees CPU copies.
        expected = oracle_keep("nms", oracle, boxes.cpu(), scores.cpu(), thr)
        assert torch.equal(_kept(detops_nms.nms, boxes, scores, thr), expected)
        # Not torchvision's batched_nms here: below 4000 boxes it offsets boxes by
        # idxs * (boxes.max() + 1), which a single NaN turns into all-NaN boxes. detops
        # keeps the per-class definition, which the per-class reference implements.
        ours = _kept(detops_nms.batched_nms, boxes, scores, idxs, thr)
        assert torch.equal(ours, oracle_keep("batched_nms", "reference", boxes, scores, idxs, thr))
    nan_boxes = torch.nonzero(torch.isnan(boxes).any(dim=1)).flatten()
    assert set(nan_boxes.tolist()) <= set(detops_nms.nms(boxes, scores, 0.0).tolist())


@pytest.mark.parametrize("device", devices())
def test_threshold_exactly_at_iou_does_not_suppress(device):
    # areas 2 and 1, intersection 1: IoU is exactly 0.5
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]], device=device)
    scores = torch.tensor([0.9, 0.8], device=device)
    assert detops_nms.nms(boxes, scores, 0.5).tolist() == [0, 1]  # IoU 0.5 is not > 0.5
    assert detops_nms.nms(boxes, scores, 0.49).tolist() == [0]


@pytest.mark.parametrize("device", devices())
def test_threshold_compared_in_double_precision(device):
    # float32(0.1) rounds up above 0.1: an IoU equal to float32(0.1) exceeds the double
    # threshold 0.1 and must suppress, as in torchvision's CPU kernel.
    iou = torch.tensor(0.1, dtype=torch.float32)
    assert float(iou) > 0.1
    boxes = torch.tensor([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 1.0, 1.0]])  # IoU = 1/10 in float32
    scores = torch.tensor([0.9, 0.8])
    inter, union = torch.tensor(1.0), torch.tensor(10.0) + torch.tensor(1.0) - torch.tensor(1.0)
    assert torch.equal(inter / union, iou)
    assert detops_nms.nms(boxes.to(device), scores.to(device), 0.1).tolist() == [0]


# CPU only: above 65536 boxes the CPU kernel takes its class-parallel path, which is what
# this checks; the CUDA kernel has no such path (its classes are compared in
# test_cpu_vs_cuda.py).
def test_large_batched_nms_runs_classes_in_parallel_correctly():
    # Above 65536 boxes the CPU kernel processes classes in parallel: the result must equal
    # per-class nms (itself checked against the oracles above), merged by score.
    g = torch.Generator().manual_seed(9)
    n = 70000
    boxes = clustered_boxes(n, g, clusters=40)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, 50, (n,), generator=g)
    expected = []
    for c in range(50):
        members = torch.where(idxs == c)[0]
        expected.append(members[detops_nms.nms(boxes[members], scores[members], 0.6)])
    merged = torch.cat(expected)
    merged = merged[torch.sort(scores[merged], stable=True, descending=True).indices]
    assert same_ordering(detops_nms.batched_nms(boxes, scores, idxs, 0.6), merged, scores)
