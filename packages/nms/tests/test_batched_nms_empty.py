"""batched_nms of boxes with no elements: an empty int64 tensor on the boxes' device, before
any other argument is looked at (torchvision's coordinate-trick path)."""

import pytest
import torch

from detops_nms import batched_nms

tv_ops = pytest.importorskip("torchvision.ops", reason="torchvision is not installed (the oracle)")


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("shape", [(0, 4), (0,), (3, 0)])
def test_empty_boxes_ignore_the_other_arguments(device, shape):
    boxes = torch.empty(shape, device=device)
    expected = tv_ops.batched_nms(boxes, None, None, 0.5)
    got = batched_nms(boxes, None, None, 0.5)
    assert got.dtype == expected.dtype == torch.int64
    assert got.shape == expected.shape == (0,)
    assert got.device == expected.device == boxes.device


def test_empty_boxes_with_ordinary_arguments():
    boxes, scores, idxs = torch.empty(0, 4), torch.empty(0), torch.empty(0, dtype=torch.int64)
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), tv_ops.batched_nms(boxes, scores, idxs, 0.5))
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5, max_output=2), torch.empty(0, dtype=torch.int64))
    scripted = torch.jit.script(batched_nms)
    assert torch.equal(scripted(boxes, scores, idxs, 0.5), torch.empty(0, dtype=torch.int64))
