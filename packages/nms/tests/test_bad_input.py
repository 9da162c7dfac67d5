"""Bad input raises an error naming the argument; never a crash."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import detops_nms

shapes = st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple)


@settings(max_examples=80, deadline=None)
@given(shapes, shapes)
def test_wrong_shapes_name_the_argument(box_shape, score_shape):
    boxes = torch.rand(box_shape)
    scores = torch.rand(score_shape)
    valid = len(box_shape) == 2 and box_shape[1] == 4 and score_shape == (box_shape[0],)
    if valid:
        detops_nms.nms(boxes, scores, 0.5)
        return
    with pytest.raises(RuntimeError, match="boxes|scores"):
        detops_nms.nms(boxes, scores, 0.5)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5), st.lists(st.integers(0, 6), max_size=2).map(tuple))
def test_idxs_shape_is_checked(n, idx_shape):
    boxes, scores = torch.rand(n, 4), torch.rand(n)
    idxs = torch.zeros(idx_shape, dtype=torch.int64)
    if idx_shape == (n,):
        detops_nms.batched_nms(boxes, scores, idxs, 0.5)
        return
    with pytest.raises(RuntimeError, match="idxs"):
        detops_nms.batched_nms(boxes, scores, idxs, 0.5)


@pytest.mark.parametrize(
    "boxes, scores, message",
    [
        (torch.rand(3, 4), torch.rand(4), "scores must have one entry per box"),
        (torch.rand(3, 5), torch.rand(3), r"boxes must be a 2-D tensor of shape \[N, 4\]"),
        (torch.rand(3, 4, 1), torch.rand(3), "boxes must be"),
        (torch.rand(3, 4), torch.rand(3, 1), "scores must be a 1-D tensor"),
        (torch.randint(0, 9, (3, 4)), torch.randint(0, 9, (3,)), "boxes must be a floating-point tensor"),
        (torch.rand(3, 4), torch.rand(3, dtype=torch.float64), "same dtype"),
        (torch.rand(3, 4, device="meta"), torch.rand(3), "same device"),
    ],
)
def test_nms_bad_input_messages(boxes, scores, message):
    with pytest.raises(RuntimeError, match=message):
        torch.ops.detops.nms(boxes, scores, 0.5)


@pytest.mark.parametrize(
    "idxs, message",
    [
        (torch.zeros(3), "idxs must be an int64 tensor"),
        (torch.zeros(3, dtype=torch.bool), "idxs must be an int64 tensor"),
        (torch.zeros(4, dtype=torch.int64), r"idxs must be a 1-D tensor of shape \[N\]"),
    ],
)
def test_batched_nms_bad_idxs(idxs, message):
    with pytest.raises(RuntimeError, match=message):
        detops_nms.batched_nms(torch.rand(3, 4), torch.rand(3), idxs, 0.5)


def test_narrow_integer_idxs_are_accepted():
    boxes, scores = torch.rand(5, 4), torch.rand(5)
    boxes[:, 2:] += boxes[:, :2]
    idxs = torch.tensor([0, 1, 0, 1, 2])
    expected = detops_nms.batched_nms(boxes, scores, idxs, 0.5)
    for dtype in (torch.int32, torch.int16, torch.int8, torch.uint8):
        assert torch.equal(detops_nms.batched_nms(boxes, scores, idxs.to(dtype), 0.5), expected)
