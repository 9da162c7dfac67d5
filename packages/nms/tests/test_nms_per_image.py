"""nms_per_image: rows (image, box), equal to a loop over the images of nms / batched_nms
and to the reference written from that definition."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nms_cases import BAD_PER_IMAGE
from nms_reference import clustered_boxes, random_boxes
from soft_nms_reference import reference_nms_per_image

import detops_nms
from detops_core.testing import devices, float_dtypes


def _batch(b, n, seed, device, ties=False, classes=4):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.stack([clustered_boxes(n, g) if i % 2 else random_boxes(n, g) for i in range(b)])
    scores = (torch.randint(0, 4, (b, n), generator=g) / 4) if ties else torch.rand(b, n, generator=g)
    idxs = torch.randint(0, classes, (b, n), generator=g)
    return boxes.to(device), scores.to(device), idxs.to(device)


def _loop(boxes, scores, threshold, idxs=None, max_output=None):
    rows = []
    for image in range(boxes.shape[0]):
        if idxs is None:
            keep = detops_nms.nms(boxes[image], scores[image], threshold, max_output=max_output)
        else:
            keep = detops_nms.batched_nms(boxes[image], scores[image], idxs[image], threshold, max_output=max_output)
        rows.append(torch.stack((torch.full_like(keep, image), keep), dim=1))
    return torch.cat(rows) if rows else torch.zeros(0, 2, dtype=torch.int64, device=boxes.device)


@pytest.mark.parametrize("max_output", [None, 0, 1, 5, 1000])
@pytest.mark.parametrize("with_idxs", [False, True], ids=["nms", "batched"])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("device", devices())
def test_matches_reference_and_loop(device, ties, with_idxs, max_output):
    boxes, scores, idxs = _batch(5, 120, 3 + ties, device, ties)
    idxs = idxs if with_idxs else None
    got = detops_nms.nms_per_image(boxes, scores, 0.5, idxs, max_output=max_output)
    assert got.dtype == torch.int64 and got.device == boxes.device and got.shape[1] == 2
    expected = reference_nms_per_image(boxes, scores, 0.5, idxs, max_output)
    assert torch.equal(got.cpu(), expected)
    assert torch.equal(got, _loop(boxes, scores, 0.5, idxs, max_output))


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("device", devices())
def test_every_dtype(device, dtype):
    boxes, scores, idxs = _batch(3, 200, 7, device)
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    for i in (None, idxs):
        assert torch.equal(detops_nms.nms_per_image(boxes, scores, 0.5, i), _loop(boxes, scores, 0.5, i))


@pytest.mark.parametrize("device", devices())
def test_many_images_in_parallel(device):
    # enough work for the CPU kernel's parallel path over images
    boxes, scores, idxs = _batch(16, 3000, 8, device, classes=10)
    for i in (None, idxs):
        for k in (None, 50):
            got = detops_nms.nms_per_image(boxes, scores, 0.7, i, max_output=k)
            assert torch.equal(got, _loop(boxes, scores, 0.7, i, k))


@pytest.mark.parametrize("device", devices())
def test_nan_and_padding(device):
    boxes, scores, idxs = _batch(3, 60, 9, device)
    scores[0, ::7] = float("nan")
    boxes[1, 3::5, 0] = float("nan")
    scores[2, 30:] = -float("inf")  # padding rows: kept last, easy to drop afterwards
    for i in (None, idxs):
        assert torch.equal(
            detops_nms.nms_per_image(boxes, scores, 0.5, i).cpu(), reference_nms_per_image(boxes, scores, 0.5, i)
        )


@pytest.mark.parametrize("device", devices())
def test_empty_batches(device):
    for b, n in ((0, 5), (3, 0), (0, 0)):
        boxes, scores = torch.zeros(b, n, 4, device=device), torch.zeros(b, n, device=device)
        out = detops_nms.nms_per_image(boxes, scores, 0.5, torch.zeros(b, n, dtype=torch.int64, device=device))
        assert out.shape == (0, 2) and out.dtype == torch.int64 and out.device.type == device


@pytest.mark.parametrize("boxes, scores, idxs, message", BAD_PER_IMAGE)
@pytest.mark.parametrize("device", devices())
def test_bad_input_names_the_argument(device, boxes, scores, idxs, message):
    idxs = None if idxs is None else idxs.to(device)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.detops.nms_per_image(boxes.to(device), scores.to(device), idxs, 0.5)


@pytest.mark.parametrize("device", devices())
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(0, 30), st.integers(0, 10**6), st.sampled_from([0.0, 0.3, 0.7]), st.booleans())
def test_equals_a_loop_over_images(device, b, n, seed, threshold, with_idxs):
    boxes, scores, idxs = _batch(b, n, seed, device, ties=seed % 2 == 0)
    idxs = idxs if with_idxs else None
    k = None if seed % 3 == 0 else seed % 7
    assert torch.equal(
        detops_nms.nms_per_image(boxes, scores, threshold, idxs, max_output=k), _loop(boxes, scores, threshold, idxs, k)
    )
