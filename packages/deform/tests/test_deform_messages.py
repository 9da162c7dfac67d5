"""Wrong offset or mask sizes: detops' message names the argument and the expectation and
also carries the phrase torchvision's message uses, so code matching torchvision's errors
keeps working. The phrases are read from torchvision's own errors for the same input."""

import re

import pytest
import torch

import detops_deform

tv_ops = pytest.importorskip("torchvision.ops", reason="torchvision is not installed (the oracle)")

X = (1, 4, 6, 6)
W = (2, 4, 3, 3)  # out 4x4 without padding
# case: (offset shape, mask shape or None, torchvision's phrase as a regex on its message)
CASES = {
    "offset channels": ((1, 17, 4, 4), None, r"the shape of the offset tensor at dimension 1 is not valid"),
    "no offset channels": ((1, 0, 4, 4), None, r"the shape of the offset tensor at dimension 1 is not valid"),
    "offset batch": ((2, 18, 4, 4), None, r"invalid batch size of offset"),
    "offset spatial": ((1, 18, 5, 4), None, r"offset output dims: \(5, 4\) - computed output dims: \(4, 4\)"),
    "mask channels": ((1, 18, 4, 4), (1, 8, 4, 4), r"mask.shape\[1\] is not valid: got: 8 expected: 9"),
    "mask batch": ((1, 18, 4, 4), (2, 9, 4, 4), r"invalid batch size of mask"),
    "mask spatial": ((1, 18, 4, 4), (1, 9, 4, 5), r"mask output dims: \(4, 5\) - computed output dims: \(4, 4\)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_message_carries_torchvision_phrase(case):
    offset_shape, mask_shape, phrase = CASES[case]
    x, w, offset = torch.rand(X), torch.rand(W), torch.rand(offset_shape)
    mask = None if mask_shape is None else torch.rand(mask_shape)
    with pytest.raises(RuntimeError) as theirs:
        tv_ops.deform_conv2d(x, offset, w, mask=mask)
    assert re.search(phrase, str(theirs.value)), str(theirs.value)
    with pytest.raises(RuntimeError, match=phrase) as ours:
        detops_deform.deform_conv2d(x, offset, w, mask=mask)
    assert str(ours.value).startswith("detops.deform_conv2d: " + ("mask" if "mask" in case else "offset"))
    module = detops_deform.DeformConv2d(4, 2, 3)
    with pytest.raises(RuntimeError, match=phrase):
        module(x, offset, mask)
