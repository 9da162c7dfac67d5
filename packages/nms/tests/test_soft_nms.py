"""soft_nms and batched_soft_nms against the reference written from the definition
(soft_nms_reference.py): kept indices identical, in order, and decayed scores identical."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nms_cases import BAD_BOXES_AND_SCORES, BAD_IDXS, BAD_SOFT_OPTIONS
from nms_reference import clustered_boxes, random_boxes, sparse_boxes
from soft_nms_reference import reference_batched_soft_nms, reference_soft_nms
from test_properties import boxes_of

import detops_nms
from detops_core.testing import assert_same, devices, float_dtypes

LAYOUTS = {"random": lambda n, g: random_boxes(n, g), "clustered": clustered_boxes, "sparse": sparse_boxes}
# (method, iou_threshold, sigma): the linear threshold matters, sigma only for gaussian.
SETTINGS = [
    ("gaussian", 0.3, 0.5),
    ("gaussian", 0.3, 0.05),
    ("gaussian", 0.3, 2.0),
    ("linear", 0.3, 0.5),
    ("linear", 0.0, 0.5),
    ("linear", 0.7, 0.5),
]


def _scores(n, g, ties):
    if ties:
        return torch.randint(1, 5, (n,), generator=g).float() / 4
    return torch.rand(n, generator=g)


def _compare(device, boxes, scores, *, idxs=None, **kw):
    args = [boxes.to(device), scores.to(device)] + ([] if idxs is None else [idxs.to(device)])
    if idxs is None:
        got = detops_nms.soft_nms(*args, **kw)
        expected = reference_soft_nms(boxes, scores, **kw)
    else:
        got = detops_nms.batched_soft_nms(*args, **kw)
        expected = reference_batched_soft_nms(boxes, scores, idxs, **kw)
    assert got[0].device == args[0].device and got[1].device == args[0].device
    assert_same([t.cpu() for t in got], list(expected), what=f"soft-NMS {kw}")
    return got


@pytest.mark.parametrize("method, iou_threshold, sigma", SETTINGS)
@pytest.mark.parametrize("score_threshold", [0.001, 0.3])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("device", devices())
def test_soft_nms_matches_reference(device, layout, ties, score_threshold, method, iou_threshold, sigma):
    g = torch.Generator().manual_seed(len(layout) * 7 + ties)
    n = 120
    boxes, scores = LAYOUTS[layout](n, g), _scores(n, g, ties)
    _compare(
        device, boxes, scores, iou_threshold=iou_threshold, sigma=sigma, score_threshold=score_threshold, method=method
    )


@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize("classes", [1, 3, 20])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("device", devices())
def test_batched_soft_nms_matches_reference(device, ties, classes, method):
    g = torch.Generator().manual_seed(classes + 3 * ties)
    n = 150
    boxes, scores = clustered_boxes(n, g), _scores(n, g, ties)
    idxs = torch.randint(0, classes, (n,), generator=g) * 1000 - 7
    _compare(device, boxes, scores, idxs=idxs, method=method)


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize("device", devices())
def test_every_dtype(device, method, dtype):
    g = torch.Generator().manual_seed(2)
    n = 100
    boxes, scores = clustered_boxes(n, g).to(dtype), torch.rand(n, generator=g).to(dtype)
    idxs = torch.randint(0, 3, (n,), generator=g)
    keep, kept = _compare(device, boxes, scores, method=method)
    assert kept.dtype == dtype and keep.dtype == torch.int64
    _compare(device, boxes, scores, idxs=idxs, method=method)


@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize("device", devices())
def test_nan_and_infinite_input(device, method):
    """NaN scores are selected first (in input order) and never dropped; a box with a NaN
    coordinate neither decays nor is decayed; infinite coordinates follow IEEE arithmetic."""
    g = torch.Generator().manual_seed(5)
    n = 120
    boxes, scores = clustered_boxes(n, g), torch.rand(n, generator=g)
    scores[::17] = float("nan")
    boxes[3::11, 0] = float("nan")
    boxes[5::13, 2] = float("inf")
    idxs = torch.randint(0, 3, (n,), generator=g)
    keep, kept = _compare(device, boxes, scores, method=method)
    nan_scores = torch.nonzero(scores.isnan()).flatten()
    assert keep[: len(nan_scores)].cpu().tolist() == nan_scores.tolist()
    nan_boxes = torch.nonzero(boxes.isnan().any(dim=1) & ~scores.isnan()).flatten()
    kept_cpu = dict(zip(keep.cpu().tolist(), kept.cpu().tolist()))
    for i in nan_boxes.tolist():
        assert kept_cpu[i] == scores[i].item()  # never decayed
    _compare(device, boxes, scores, idxs=idxs, method=method)


@pytest.mark.parametrize("device", devices())
def test_definition_on_a_small_case(device):
    """Three boxes worked by hand: IoU(0, 1) = 1/2 exactly (areas 2 and 1, overlap 1), box 2
    far away. Gaussian, sigma 0.5: box 1 decays to 0.8 * exp(-0.25 / 0.5)."""
    import math

    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0], [10.0, 10.0, 11.0, 11.0]], device=device)
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    keep, kept = detops_nms.soft_nms(boxes, scores, sigma=0.5)
    decayed = torch.tensor(0.8, dtype=torch.float64).float().item() * math.exp(-0.5)
    assert keep.tolist() == [0, 2, 1]
    assert kept.tolist() == [scores[0].item(), scores[2].item(), torch.tensor(decayed).float().item()]
    # linear: IoU 0.5 > 0.3 decays box 1 by 1 - 0.5; IoU 0.5 is not > 0.5
    assert detops_nms.soft_nms(boxes, scores, 0.3, method="linear")[1][2].item() == pytest.approx(0.4)
    assert detops_nms.soft_nms(boxes, scores, 0.5, method="linear")[1].tolist() == scores.tolist()
    # a score threshold above the decayed score drops box 1
    assert detops_nms.soft_nms(boxes, scores, sigma=0.5, score_threshold=0.5)[0].tolist() == [0, 2]


@pytest.mark.parametrize("device", devices())
def test_empty_input(device):
    boxes, scores = torch.zeros(0, 4, device=device), torch.zeros(0, device=device)
    for keep, kept in (
        detops_nms.soft_nms(boxes, scores),
        detops_nms.batched_soft_nms(boxes, scores, torch.zeros(0, dtype=torch.int64, device=device)),
    ):
        assert keep.shape == (0,) and keep.dtype == torch.int64 and keep.device.type == device
        assert kept.shape == (0,) and kept.dtype == torch.float32


@pytest.mark.parametrize("kwargs, message", BAD_SOFT_OPTIONS)
@pytest.mark.parametrize("device", devices())
def test_bad_arguments_name_themselves(device, kwargs, message):
    boxes, scores = torch.rand(3, 4, device=device), torch.rand(3, device=device)
    with pytest.raises(RuntimeError, match=message):
        detops_nms.soft_nms(boxes, scores, **kwargs)
    with pytest.raises(RuntimeError, match=message):
        detops_nms.batched_soft_nms(boxes, scores, torch.zeros(3, dtype=torch.int64, device=device), **kwargs)


@pytest.mark.parametrize("device", devices())
def test_linear_ignores_sigma(device):
    boxes, scores = clustered_boxes(50, torch.Generator().manual_seed(1)), torch.rand(50)
    boxes, scores = boxes.to(device), scores.to(device)
    a = detops_nms.soft_nms(boxes, scores, method="linear", sigma=0.5)
    assert_same(detops_nms.soft_nms(boxes, scores, method="linear", sigma=0.0), a)


@pytest.mark.parametrize("boxes, scores, message", BAD_BOXES_AND_SCORES)
@pytest.mark.parametrize("device", devices())
def test_bad_tensors_name_the_argument(device, boxes, scores, message):
    # Meta tensors stay where they are: next to a tensor on `device` they are the mismatch.
    boxes, scores = (t if t.is_meta else t.to(device) for t in (boxes, scores))
    with pytest.raises(RuntimeError, match=message):
        detops_nms.soft_nms(boxes, scores)


@pytest.mark.parametrize("idxs, message", BAD_IDXS)
@pytest.mark.parametrize("device", devices())
def test_bad_idxs_name_the_argument(device, idxs, message):
    boxes, scores = torch.rand(3, 4, device=device), torch.rand(3, device=device)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.detops.batched_soft_nms(boxes, scores, idxs.to(device))


@st.composite
def problems(draw, max_n=40):
    n = draw(st.integers(min_value=0, max_value=max_n))
    boxes = draw(boxes_of(n))
    scores = torch.tensor(
        draw(st.lists(st.sampled_from([0.0, 0.2, 0.5, 1.0]) | st.floats(0, 1), min_size=n, max_size=n)),
        dtype=torch.float32,
    )
    idxs = torch.tensor(draw(st.lists(st.integers(-2, 2), min_size=n, max_size=n)), dtype=torch.int64)
    kw = dict(
        iou_threshold=draw(st.sampled_from([0.0, 0.3, 0.5, 1.0]) | st.floats(0, 1)),
        sigma=draw(st.sampled_from([0.5, 0.1]) | st.floats(0.01, 4)),
        score_threshold=draw(st.sampled_from([0.0, 0.001, 0.3])),
        method=draw(st.sampled_from(["gaussian", "linear"])),
    )
    return boxes, scores, idxs, kw


@pytest.mark.parametrize("device", devices())
@settings(max_examples=60, deadline=None)
@given(problems())
def test_soft_nms_matches_reference_on_any_input(device, problem):
    boxes, scores, idxs, kw = problem
    _compare(device, boxes, scores, **kw)
    _compare(device, boxes, scores, idxs=idxs, **kw)


@pytest.mark.parametrize("device", devices())
@settings(max_examples=40, deadline=None)
@given(problems())
def test_one_class_is_soft_nms_and_classes_are_independent(device, problem):
    boxes, scores, idxs, kw = problem
    boxes, scores, idxs = boxes.to(device), scores.to(device), idxs.to(device)
    single = detops_nms.soft_nms(boxes, scores, **kw)
    assert_same(detops_nms.batched_soft_nms(boxes, scores, torch.zeros_like(idxs), **kw), single)
    # per class: each class alone gives its boxes and scores, in the same relative order
    keep, kept = detops_nms.batched_soft_nms(boxes, scores, idxs, **kw)
    for c in torch.unique(idxs).tolist():
        members = torch.nonzero(idxs == c).flatten()
        k, s = detops_nms.soft_nms(boxes[members], scores[members], **kw)
        mine = idxs[keep] == c
        assert torch.equal(keep[mine], members[k]) and torch.equal(kept[mine], s)
