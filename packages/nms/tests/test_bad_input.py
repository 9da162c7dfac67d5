"""Bad input raises an error naming the argument, never a crash, eagerly and once traced by
torch.compile or torch.export."""

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nms_cases import BAD_BOXES_AND_SCORES, BAD_IDXS, bad_calls

import detops_nms
from detops_core.testing import assert_traced_raises_like_native, devices, requires_cuda

shapes = st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple)


@pytest.mark.parametrize("device", devices())
@settings(max_examples=80, deadline=None)
@given(shapes, shapes)
def test_wrong_shapes_name_the_argument(device, box_shape, score_shape):
    boxes = torch.rand(box_shape, device=device)
    scores = torch.rand(score_shape, device=device)
    valid = len(box_shape) == 2 and box_shape[1] == 4 and score_shape == (box_shape[0],)
    if valid:
        detops_nms.nms(boxes, scores, 0.5)
        return
    with pytest.raises(RuntimeError, match="boxes|scores"):
        detops_nms.nms(boxes, scores, 0.5)


@pytest.mark.parametrize("device", devices())
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5), st.lists(st.integers(0, 6), max_size=2).map(tuple))
def test_idxs_shape_is_checked(device, n, idx_shape):
    boxes, scores = torch.rand(n, 4, device=device), torch.rand(n, device=device)
    idxs = torch.zeros(idx_shape, dtype=torch.int64, device=device)
    if idx_shape == (n,) or n == 0:
        # No boxes: an empty result whatever idxs is, as torchvision (test_batched_nms_empty.py).
        keep = detops_nms.batched_nms(boxes, scores, idxs, 0.5)
        assert n > 0 or keep.shape == (0,)
        return
    with pytest.raises(RuntimeError, match="idxs"):
        detops_nms.batched_nms(boxes, scores, idxs, 0.5)


def _on(device, *tensors):
    # Meta tensors stay where they are: next to a tensor on `device` they are the mismatch.
    return tuple(t if t.is_meta else t.to(device) for t in tensors)


@pytest.mark.parametrize("boxes, scores, message", BAD_BOXES_AND_SCORES)
@pytest.mark.parametrize("device", devices())
def test_nms_bad_input_messages(boxes, scores, message, device):
    boxes, scores = _on(device, boxes, scores)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.detops.nms(boxes, scores, 0.5)


@pytest.mark.parametrize("idxs, message", BAD_IDXS)
@pytest.mark.parametrize("device", devices())
def test_batched_nms_bad_idxs(idxs, message, device):
    boxes, scores = torch.rand(3, 4, device=device), torch.rand(3, device=device)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.detops.batched_nms(boxes, scores, idxs.to(device), 0.5)


@pytest.mark.parametrize("op, args, message", [pytest.param(*c[1:], id=c[0]) for c in bad_calls()])
def test_every_bad_call_raises_its_message(op, args, message):
    with pytest.raises(RuntimeError, match=message):
        op(*args)


# torch.compile and torch.export trace with the fake kernels, which only infer shapes: the
# native op reports the bad call when the traced code runs.
_TRACED = ("nms-1", "batched_nms-idxs2", "soft_nms-options0", "nms_per_image-2", "nms-max_output-1")


@pytest.mark.parametrize("op, args, message", [pytest.param(*c[1:], id=c[0]) for c in bad_calls() if c[0] in _TRACED])
def test_bad_calls_once_traced_raise_like_native(op, args, message):
    assert re.search(message, assert_traced_raises_like_native(op, args))


@pytest.mark.parametrize("op", ["batched_nms", "nms_per_image", "batched_soft_nms", "batched_nms_rotated"])
@pytest.mark.parametrize("device", devices())
def test_narrow_integer_idxs_are_accepted(op, device):
    # Every wrapper taking category ids widens narrower integer dtypes to the schema's int64.
    boxes, scores = torch.rand(5, 4, device=device), torch.rand(5, device=device)
    boxes[:, 2:] += boxes[:, :2]
    rotated = torch.cat(((boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2], scores[:, None] * 90), 1)
    call = {
        "batched_nms": lambda ids: detops_nms.batched_nms(boxes, scores, ids, 0.5),
        "nms_per_image": lambda ids: detops_nms.nms_per_image(boxes[None], scores[None], 0.5, ids[None]),
        "batched_soft_nms": lambda ids: detops_nms.batched_soft_nms(boxes, scores, ids, 0.5),
        "batched_nms_rotated": lambda ids: detops_nms.batched_nms_rotated(rotated, scores, ids, 0.5),
    }[op]
    idxs = torch.tensor([0, 1, 0, 1, 2], device=device)
    expected = call(idxs)
    for dtype in (torch.int32, torch.int16, torch.int8, torch.uint8):
        torch.testing.assert_close(call(idxs.to(dtype)), expected, rtol=0, atol=0, msg=f"idxs of {dtype}")


# A CUDA kernel given a CPU tensor would read host memory as device memory: every
# argument's device is checked, and the message names both devices.
@requires_cuda()
@pytest.mark.parametrize("on_cpu", ["boxes", "scores"])
def test_nms_mixed_devices_name_both(on_cpu):
    args = {"boxes": torch.rand(3, 4, device="cuda"), "scores": torch.rand(3, device="cuda")}
    args[on_cpu] = args[on_cpu].cpu()
    with pytest.raises(
        RuntimeError, match=r"boxes and scores must be on the same device, got (cuda:\d+ and cpu|cpu and cuda:\d+)"
    ):
        detops_nms.nms(args["boxes"], args["scores"], 0.5)


@requires_cuda()
@pytest.mark.parametrize("on_cpu", ["boxes", "scores", "idxs"])
def test_batched_nms_mixed_devices_name_both(on_cpu):
    args = {
        "boxes": torch.rand(3, 4, device="cuda"),
        "scores": torch.rand(3, device="cuda"),
        "idxs": torch.zeros(3, dtype=torch.int64, device="cuda"),
    }
    args[on_cpu] = args[on_cpu].cpu()
    with pytest.raises(RuntimeError, match=r"must be on the same device, got (cuda:\d+ and cpu|cpu and cuda:\d+)"):
        detops_nms.batched_nms(args["boxes"], args["scores"], args["idxs"], 0.5)
