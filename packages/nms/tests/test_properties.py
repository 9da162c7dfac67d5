"""Properties that hold for any input, checked on hypothesis-generated boxes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nms_reference import boxes_from

import detops_nms
from detops_core.testing import devices

coords = st.floats(min_value=-50, max_value=50, allow_nan=False, width=32)
sizes = st.floats(min_value=0, max_value=40, allow_nan=False, width=32)


@st.composite
def boxes_of(draw, n):
    """n float32 boxes (x1, y1, x2, y2) with corners in [-50, 50] and sides in [0, 40]."""
    corner = torch.tensor(draw(st.lists(st.tuples(coords, coords), min_size=n, max_size=n)), dtype=torch.float32)
    size = torch.tensor(draw(st.lists(st.tuples(sizes, sizes), min_size=n, max_size=n)), dtype=torch.float32)
    return boxes_from(corner.reshape(n, 2), size.reshape(n, 2))


@st.composite
def problems(draw, max_n=60):
    n = draw(st.integers(min_value=0, max_value=max_n))
    boxes = draw(boxes_of(n))
    scores = torch.tensor(
        draw(st.lists(st.sampled_from([0.1, 0.2, 0.5, 0.7, 0.9]) | st.floats(0, 1), min_size=n, max_size=n))
    )
    idxs = torch.tensor(draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)), dtype=torch.int64)
    threshold = draw(st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0]) | st.floats(0, 1))
    return boxes, scores.float(), idxs, threshold


def _iou(a, b):
    w = (torch.minimum(a[2], b[2]) - torch.maximum(a[0], b[0])).clamp(min=0)
    h = (torch.minimum(a[3], b[3]) - torch.maximum(a[1], b[1])).clamp(min=0)
    inter = w * h
    area = lambda x: (x[2] - x[0]) * (x[3] - x[1])  # noqa: E731
    return float(inter / (area(a) + area(b) - inter))


def _check_greedy(boxes, scores, keep, threshold, same_group):
    n = len(boxes)
    kept = keep.tolist()
    assert len(set(kept)) == len(kept) and all(0 <= k < n for k in kept)
    # decreasing score, ties in input order
    ranked = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    position = {i: r for r, i in enumerate(ranked)}
    assert kept == sorted(kept, key=lambda i: position[i])
    kept_set = set(kept)
    for i in range(n):
        earlier_kept = [k for k in kept if position[k] < position[i] and same_group(k, i)]
        suppressed_by = [k for k in earlier_kept if _iou(boxes[k], boxes[i]) > threshold]
        # kept iff no earlier kept box (same group) overlaps it above the threshold
        assert (i in kept_set) == (not suppressed_by), (i, suppressed_by)


def _on(device, *tensors):
    return tuple(t.to(device) for t in tensors)


# The op runs on `device`; the checks run on the CPU inputs and a CPU copy of its result.
@pytest.mark.parametrize("device", devices())
@settings(max_examples=60, deadline=None)
@given(problems())
def test_nms_is_greedy_suppression(device, problem):
    boxes, scores, _, threshold = problem
    keep = detops_nms.nms(*_on(device, boxes, scores), threshold).cpu()
    _check_greedy(boxes, scores, keep, threshold, lambda a, b: True)


@pytest.mark.parametrize("device", devices())
@settings(max_examples=60, deadline=None)
@given(problems())
def test_batched_nms_is_greedy_suppression_per_class(device, problem):
    boxes, scores, idxs, threshold = problem
    keep = detops_nms.batched_nms(*_on(device, boxes, scores, idxs), threshold).cpu()
    _check_greedy(boxes, scores, keep, threshold, lambda a, b: bool(idxs[a] == idxs[b]))


@pytest.mark.parametrize("device", devices())
@settings(max_examples=40, deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_permuting_inputs_permutes_output(device, problem, rnd):
    boxes, scores, idxs, threshold = problem
    n = len(boxes)
    scores = torch.arange(n, dtype=torch.float32)[torch.randperm(n)] if n else scores  # distinct
    perm = list(range(n))
    rnd.shuffle(perm)
    perm = torch.tensor(perm, dtype=torch.int64)
    keep = detops_nms.batched_nms(*_on(device, boxes, scores, idxs), threshold).cpu()
    keep_p = detops_nms.batched_nms(*_on(device, boxes[perm], scores[perm], idxs[perm]), threshold).cpu()
    assert torch.equal(perm[keep_p], keep)


@pytest.mark.parametrize("device", devices())
@settings(max_examples=40, deadline=None)
@given(problems(), st.integers(-1000, 1000))
def test_class_labels_only_matter_through_equality(device, problem, shift):
    boxes, scores, idxs, threshold = problem
    boxes, scores, idxs = _on(device, boxes, scores, idxs)
    a = detops_nms.batched_nms(boxes, scores, idxs, threshold)
    b = detops_nms.batched_nms(boxes, scores, idxs * 7 + shift, threshold)
    assert torch.equal(a, b)
