"""The CUDA kernels of fpn_upsample_add, run by the CPU emulation of the CUDA execution
model (detops/cuda_emulation.h), against the CPU kernels on the cases of
test_upsample_add.py. Both sum each top element's window in acc_t in the same row-major
order, so results are bitwise equal."""

import pytest
import torch
from fpn_reference import UPSAMPLE_SIZES, upsample_case

from detops_core.testing import float_dtypes, require_emulated_ops

SIZES = [*UPSAMPLE_SIZES, (2, 3, 0, 5)]  # and an empty lateral map


@pytest.fixture(scope="module")
def emulated():
    return require_emulated_ops("detops_fpn")


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("th, tw, oh, ow", SIZES)
def test_forward_and_backward_equal_cpu(emulated, th, tw, oh, ow, dtype, channels_last):
    top, lateral, grad = upsample_case(th, tw, oh, ow, dtype, channels_last=channels_last)
    assert torch.equal(emulated.fpn_upsample_add(top, lateral), torch.ops.detops.fpn_upsample_add(top, lateral))
    assert torch.equal(
        emulated._fpn_upsample_add_backward(grad, th, tw), torch.ops.detops._fpn_upsample_add_backward(grad, th, tw)
    )


def test_bad_input_raises_the_cpu_message(emulated):
    top, lateral = torch.randn(1, 2, 3, 3), torch.randn(1, 3, 6, 6)
    with pytest.raises(RuntimeError) as cpu:
        torch.ops.detops.fpn_upsample_add(top, lateral)
    with pytest.raises(RuntimeError) as emu:
        emulated.fpn_upsample_add(top, lateral)
    assert str(emu.value).splitlines()[0] == str(cpu.value).splitlines()[0]
