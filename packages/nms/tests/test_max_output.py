"""nms(..., max_output=k) and batched_nms(..., max_output=k): the first k boxes of the
unlimited result, for every k; the torchvision signature is unchanged."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nms_reference import random_boxes, reference_batched_nms, reference_nms
from test_properties import problems

import detops_nms
from detops_core.testing import devices


def _problem(n, seed, device, ties=False):
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(n, g, extent=300)
    scores = torch.randint(0, 4, (n,), generator=g) / 4 if ties else torch.rand(n, generator=g)
    idxs = torch.randint(0, 5, (n,), generator=g)
    return boxes.to(device), scores.to(device), idxs.to(device)


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("device", devices())
def test_every_limit_is_a_prefix_of_the_reference(device, ties):
    boxes, scores, idxs = _problem(300, 1, device, ties)
    full = reference_nms(boxes.cpu(), scores.cpu(), 0.5)
    full_batched = reference_batched_nms(boxes.cpu(), scores.cpu(), idxs.cpu(), 0.5)
    assert 66 < len(full) < 300
    for k in [0, 1, 2, 7, 64, 65, len(full) - 1, len(full), len(full) + 1, 300, 10**6]:
        got = detops_nms.nms(boxes, scores, 0.5, max_output=k)
        assert got.device == boxes.device and torch.equal(got.cpu(), full[:k]), k
        got = detops_nms.batched_nms(boxes, scores, idxs, 0.5, max_output=k)
        assert torch.equal(got.cpu(), full_batched[:k]), k


@pytest.mark.parametrize("device", devices())
@settings(max_examples=60, deadline=None)
@given(problems(), st.integers(0, 70))
def test_max_output_is_a_prefix_of_the_unlimited_result(device, problem, k):
    boxes, scores, idxs, threshold = (t.to(device) if isinstance(t, torch.Tensor) else t for t in problem)
    assert torch.equal(
        detops_nms.nms(boxes, scores, threshold, max_output=k), detops_nms.nms(boxes, scores, threshold)[:k]
    )
    assert torch.equal(
        detops_nms.batched_nms(boxes, scores, idxs, threshold, max_output=k),
        detops_nms.batched_nms(boxes, scores, idxs, threshold)[:k],
    )


@pytest.mark.parametrize("device", devices())
def test_none_is_no_limit_and_the_torchvision_signature_works(device):
    boxes, scores, idxs = _problem(200, 2, device)
    full = detops_nms.nms(boxes, scores, 0.5)
    assert torch.equal(detops_nms.nms(boxes, scores, 0.5, max_output=None), full)
    assert torch.equal(detops_nms.nms(boxes=boxes, scores=scores, iou_threshold=0.5), full)
    assert torch.equal(torch.ops.detops.nms(boxes, scores, 0.5), full)  # the op without the new argument
    assert torch.equal(torch.ops.detops.nms(boxes, scores, 0.5, 3), full[:3])
    with pytest.raises(TypeError):
        detops_nms.nms(boxes, scores, 0.5, 3)  # keyword-only


@pytest.mark.parametrize("device", devices())
def test_large_batched_limit_with_parallel_classes(device):
    # above 65536 boxes the CPU kernel runs classes in parallel, each stopping at k
    boxes, scores, idxs = _problem(70000, 3, device)
    full = detops_nms.batched_nms(boxes, scores, idxs, 0.6)
    for k in (1, 100, 5000):
        assert torch.equal(detops_nms.batched_nms(boxes, scores, idxs, 0.6, max_output=k), full[:k])


@pytest.mark.parametrize("device", devices())
def test_negative_limit_names_the_argument(device):
    boxes, scores, idxs = _problem(10, 4, device)
    for call in (
        lambda: detops_nms.nms(boxes, scores, 0.5, max_output=-1),
        lambda: detops_nms.batched_nms(boxes, scores, idxs, 0.5, max_output=-1),
        lambda: detops_nms.nms_per_image(boxes[None], scores[None], 0.5, max_output=-1),
    ):
        with pytest.raises(RuntimeError, match="max_output must be None or >= 0, got -1"):
            call()
