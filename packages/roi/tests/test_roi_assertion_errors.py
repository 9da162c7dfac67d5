"""Where torchvision checks the boxes with torch._assert (check_roi_boxes_shape), code
catches AssertionError: detops' error is an AssertionError there too, and still the
RuntimeError with detops' message (the native check is tagged, detops_core.errors maps it)."""

import pytest
import torch

import detops_roi
from detops_core.errors import ASSERTION_TAG, AssertionRuntimeError

FUNCTIONS = ["roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool"]
BAD_BOXES = {
    "tensor of 4 columns": lambda: torch.rand(3, 4),
    "tensor of 6 columns": lambda: torch.rand(3, 6),
    "list with a tensor of 5 columns": lambda: [torch.rand(2, 4), torch.rand(3, 5)],
}


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("case", sorted(BAD_BOXES))
def test_bad_boxes_are_assertion_errors_like_torchvision(name, case):
    x = torch.rand(2, 8, 6, 6)
    tv_ops = pytest.importorskip("torchvision.ops", reason="torchvision is not installed (the oracle)")
    with pytest.raises(AssertionError):
        getattr(tv_ops, name)(x, BAD_BOXES[case](), 2)
    with pytest.raises(AssertionError) as caught:
        getattr(detops_roi, name)(x, BAD_BOXES[case](), 2)
    assert isinstance(caught.value, RuntimeError) and isinstance(caught.value, AssertionRuntimeError)
    assert "must be" in str(caught.value) and ASSERTION_TAG not in str(caught.value)


def test_modules_and_other_roi_functions():
    x = torch.rand(1, 8, 6, 6)
    with pytest.raises(AssertionError, match=r"rois must be a 2-D tensor of shape \[K, 5\]"):
        detops_roi.RoIAlign(2, 1.0, 2)(x, torch.rand(3, 4))
    with pytest.raises(AssertionError, match=r"shape \[K, 6\]"):
        detops_roi.roi_align_rotated(x, torch.rand(3, 5), 2)
    with pytest.raises(AssertionError, match=r"rois must be"):
        detops_roi.multi_level_roi_align([x], torch.rand(3, 4), torch.zeros(3, dtype=torch.int64), 2, [1.0])


def test_other_errors_stay_runtime_errors():
    x = torch.rand(1, 8, 6, 6)
    with pytest.raises(RuntimeError) as caught:
        detops_roi.roi_align(x, torch.tensor([[3.0, 0, 0, 1, 1]]), 2)  # batch index out of range
    assert not isinstance(caught.value, AssertionError)


def test_the_raw_op_keeps_the_native_error():
    with pytest.raises(RuntimeError, match="rois must be") as caught:
        torch.ops.detops.roi_align(torch.rand(1, 1, 4, 4), torch.rand(3, 4), 1.0, 2, 2, -1, False)
    assert not isinstance(caught.value, AssertionError)


def test_scripted_functions_still_raise():
    scripted = torch.jit.script(detops_roi.RoIPool(2, 1.0))
    with pytest.raises(Exception, match="rois must be"):
        scripted(torch.rand(1, 8, 6, 6), torch.rand(3, 4))
