"""Inputs that once crashed the process or overflowed int64 (found under UBSan and by the
fuzzer). Each runs in its own process, so a regression fails one test instead of killing
the run."""

import pytest

from detops_core.testing import run_isolated

SETUP = """
import torch, detops_deform
x, w = torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3)
offset = torch.zeros(1, 18, 3, 3)
"""

# (call, words the error must contain: the argument and its real value)
CASES = {
    "zero_input_channels": (
        "detops_deform.deform_conv2d(torch.randn(1, 0, 5, 5), offset, torch.randn(2, 1, 3, 3))",
        ["input must have at least one channel", "[1, 0, 5, 5]"],
    ),
    "zero_input_channels_module": (
        "m = detops_deform.DeformConv2d(1, 2, 3); m(torch.randn(1, 0, 5, 5), offset)",
        ["input must have at least one channel"],
    ),
    "huge_dilation": (
        "detops_deform.deform_conv2d(x, offset, w, dilation=(2**62, 1))",
        ["dilation (4611686018427387904, 1)", "larger than 2^63 - 1"],
    ),
    "huge_padding": (
        "detops_deform.deform_conv2d(x, offset, w, padding=(2**62, 0))",
        ["padding (4611686018427387904, 0)", "larger than 2^63 - 1"],
    ),
    "huge_padding_and_dilation_backward_op": (
        "torch.ops.detops._deform_conv2d_backward(torch.zeros(1, 2, 3, 3), x, offset, w, None, "
        "1, 1, 2**62, 2**62, 2**61, 2**61)",
        ["padding (4611686018427387904, 4611686018427387904)", "dilation (2305843009213693952"],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_raises_with_real_values(name):
    call, words = CASES[name]
    out = run_isolated(
        SETUP
        + f"""
try:
    {call}
except RuntimeError as e:
    print(e)
else:
    raise SystemExit("no error")
"""
    )
    for word in words:
        assert word in out, out
