"""The CUDA kernels of fpn_upsample_add, run by the CPU emulation of the CUDA execution
model (detops/cuda_emulation.h), against the CPU kernels on the cases of
test_upsample_add.py. Both sum each top element's window in acc_t in the same row-major
order, so results are bitwise equal."""

import pytest
import torch

from detops_core.testing import require_emulated_ops

SIZES = [(5, 7, 10, 14), (3, 3, 7, 9), (7, 9, 5, 4), (1, 1, 6, 6), (25, 38, 50, 76), (4, 4, 4, 4), (2, 3, 0, 5)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.fixture(scope="module")
def emulated():
    return require_emulated_ops("detops_fpn")


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("th, tw, oh, ow", SIZES)
def test_forward_and_backward_equal_cpu(emulated, th, tw, oh, ow, dtype, channels_last):
    g = torch.Generator().manual_seed(th * 100 + ow)
    top = torch.randn(2, 3, th, tw, generator=g).to(dtype)
    lateral = torch.randn(2, 3, oh, ow, generator=g).to(dtype)
    grad = torch.randn(2, 3, oh, ow, generator=g).to(dtype)
    if channels_last:
        top, lateral = (t.to(memory_format=torch.channels_last) for t in (top, lateral))
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
