"""generalized_box_iou_loss, distance_box_iou_loss, complete_box_iou_loss and their backward
ops through their CUDA kernels (csrc/cuda/box_iou_loss_kernel.cu: loss_kernel, chunk_kernel,
total_kernel, backward_kernel), run by the CPU emulation of the CUDA execution model
(detops/cuda_emulation.h), against the CPU kernels.

Results must be equal to the bit: both compile box_pair_math.h's host branch, and the
reductions add the same chunks in the same order (box_iou_loss_entry.h).
"""

import os
import re

import pytest
import torch
from box_iou_loss_reference import adversarial_pairs, random_pairs

from detops_core.testing import emulated_launches, require_emulated_ops

PACKAGE = "detops_losses"
CUDA_FILE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), os.pardir, "csrc", "cuda", "box_iou_loss_kernel.cu"
)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
NAMES = ["generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"]
REDUCTIONS = ["none", "mean", "sum"]
# One pair; a partial chunk; exactly one chunk (4096); several with a ragged last one.
SIZES = [1, 37, 4096, 9000]


@pytest.fixture(scope="module")
def emulated():
    return require_emulated_ops(PACKAGE)


def _case(n, seed, dtype, adversarial=False):
    a, b = random_pairs(n, torch.Generator().manual_seed(seed))
    if adversarial:
        x, y = adversarial_pairs()
        a, b = torch.cat((a, x)), torch.cat((b, y))
    return a.to(dtype), b.to(dtype)


def _equal(x, y):
    return x.dtype == y.dtype and torch.equal(x.isnan(), y.isnan()) and torch.equal(x.nan_to_num(), y.nan_to_num())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_equals_cpu(emulated, name, n, dtype, reduction):
    a, b = _case(n, n, dtype, adversarial=reduction == "none")
    ours = getattr(torch.ops.detops, name)(a, b, reduction, 0.01)
    emu = getattr(emulated, name)(a, b, reduction, 0.01)
    assert _equal(emu, ours)
    grad = torch.randn(ours.shape, generator=torch.Generator().manual_seed(n), dtype=torch.float64).to(ours.dtype)
    backward = f"_{name}_backward"
    cpu_grads = getattr(torch.ops.detops, backward)(grad, a, b, reduction, 0.01)
    emu_grads = getattr(emulated, backward)(grad, a, b, reduction, 0.01)
    for x, y in zip(emu_grads, cpu_grads):
        assert _equal(x, y)


@pytest.mark.parametrize("name", NAMES)
def test_empty_and_non_contiguous(emulated, name):
    a, b = _case(70, 3, torch.float32)
    wide = torch.zeros(70, 9)
    wide[:, 1:9:2] = a
    strided = wide[:, 1:9:2]
    for reduction in REDUCTIONS:
        assert _equal(
            getattr(emulated, name)(strided, b, reduction, 1e-7), getattr(torch.ops.detops, name)(a, b, reduction, 1e-7)
        )
    empty = torch.zeros(0, 4)
    assert getattr(emulated, name)(empty, empty, "none", 1e-7).shape == (0,)
    assert getattr(emulated, name)(empty, empty, "mean", 1e-7).item() == 0.0
    g1, g2 = getattr(emulated, f"_{name}_backward")(torch.zeros(()), empty, empty, "sum", 1e-7)
    assert g1.shape == (0, 4) and g2.shape == (0, 4)


def test_every_kernel_is_launched(emulated):
    with open(CUDA_FILE) as f:
        kernels = {f"box_iou_loss {k}" for k in re.findall(r"__global__\s+void\s+(\w+)", f.read())}
    expected = {
        "box_iou_loss loss_kernel": 6,
        "box_iou_loss chunk_kernel": 3,
        "box_iou_loss total_kernel": 3,
        "box_iou_loss backward_kernel": 3,
    }
    assert kernels == set(expected)
    before = emulated_launches(PACKAGE)
    a, b = _case(70, 6, torch.float32)
    for name in NAMES:
        getattr(emulated, name)(a, b, "none", 1e-7)
        getattr(emulated, name)(a, b, "mean", 1e-7)
        getattr(emulated, f"_{name}_backward")(torch.ones(70), a, b, "none", 1e-7)
    after = emulated_launches(PACKAGE)
    for kernel, count in expected.items():
        assert after.get(kernel, 0) - before.get(kernel, 0) == count, (kernel, before, after)


def test_bad_input_raises_the_cpu_message(emulated):
    a, b = torch.rand(3, 4), torch.rand(3, 4)
    cases = [
        ("generalized_box_iou_loss", (a, torch.rand(2, 4), "none", 1e-7)),
        ("distance_box_iou_loss", (a, b, "max", 1e-7)),
        ("_complete_box_iou_loss_backward", (torch.rand(3), a, b, "sum", 1e-7)),
    ]
    for name, args in cases:
        with pytest.raises(RuntimeError) as cpu:
            getattr(torch.ops.detops, name)(*args)
        with pytest.raises(RuntimeError) as emu:
            getattr(emulated, name)(*args)
        assert str(emu.value).splitlines()[0] == str(cpu.value).splitlines()[0]
