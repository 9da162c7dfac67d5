"""generalized_box_iou, distance_box_iou, complete_box_iou and their backward ops through
their CUDA kernels (csrc/cuda/box_pair_iou_kernel.cu: forward_kernel, rows_kernel,
column_blocks_kernel, columns_kernel), run by the CPU emulation of the CUDA execution model
(detops/cuda_emulation.h), against the CPU kernels.

Results must be equal to the bit: both compile box_pair_math.h's host branch and sum each
box's gradient in the order box_pair_entry.h fixes (rows in turn; columns by row blocks).
"""

import os
import re

import pytest
import torch
from box_pair_reference import adversarial_boxes, random_boxes

from detops_core.testing import emulated_launches, require_emulated_ops

PACKAGE = "detops_nms"
CUDA_FILE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), os.pardir, "csrc", "cuda", "box_pair_iou_kernel.cu"
)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
NAMES = ["generalized_box_iou", "distance_box_iou", "complete_box_iou"]
# One row; a partial row block; exactly one; one and a bit; several with a ragged last one.
SIZES = [1, 5, 64, 65, 200]


@pytest.fixture(scope="module")
def emulated():
    return require_emulated_ops(PACKAGE)


def _args(name, eps=0.01):
    return () if name == "generalized_box_iou" else (eps,)


def _case(n, m, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    extra = adversarial_boxes()
    a = torch.cat((random_boxes(n, g), extra))[:n]
    b = torch.cat((extra, random_boxes(m, g)))[-m:] if m else random_boxes(0, g)
    grad = torch.randn(n, m, generator=g, dtype=torch.float64)
    return a.to(dtype), b.to(dtype), grad


def _equal(x, y):
    return x.dtype == y.dtype and torch.equal(x.isnan(), y.isnan()) and torch.equal(x.nan_to_num(), y.nan_to_num())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_equals_cpu(emulated, name, n, dtype):
    a, b, grad = _case(n, 23, n, dtype)
    ours = getattr(torch.ops.detops, name)(a, b, *_args(name))
    emu = getattr(emulated, name)(a, b, *_args(name))
    assert _equal(emu, ours)
    grad = grad.to(ours.dtype)
    cpu_grads = getattr(torch.ops.detops, f"_{name}_backward")(grad, a, b, *_args(name))
    emu_grads = getattr(emulated, f"_{name}_backward")(grad, a, b, *_args(name))
    for x, y in zip(emu_grads, cpu_grads):
        assert _equal(x, y)


@pytest.mark.parametrize("name", NAMES)
def test_empty_and_non_contiguous(emulated, name):
    a, b, grad = _case(70, 9, 3, torch.float32)
    wide = torch.zeros(70, 9)
    wide[:, 1:9:2] = a
    strided = wide[:, 1:9:2]
    assert _equal(
        getattr(emulated, name)(strided, b, *_args(name)), getattr(torch.ops.detops, name)(a, b, *_args(name))
    )
    backward = f"_{name}_backward"
    for x, y in zip(
        getattr(emulated, backward)(grad.float().t().contiguous().t(), strided, b, *_args(name)),
        getattr(torch.ops.detops, backward)(grad.float(), a, b, *_args(name)),
    ):
        assert _equal(x, y)
    empty = torch.zeros(0, 4)
    assert getattr(emulated, name)(empty, b, *_args(name)).shape == (0, 9)
    g1, g2 = getattr(emulated, backward)(torch.zeros(70, 0), a, empty, *_args(name))
    assert torch.equal(g1, torch.zeros(70, 4)) and g2.shape == (0, 4)


def test_every_kernel_is_launched(emulated):
    with open(CUDA_FILE) as f:
        kernels = {f"box_pair_iou {k}" for k in re.findall(r"__global__\s+void\s+(\w+)", f.read())}
    expected = {
        "box_pair_iou forward_kernel": 3,
        "box_pair_iou rows_kernel": 3,
        "box_pair_iou column_blocks_kernel": 3,
        "box_pair_iou columns_kernel": 3,
    }
    assert kernels == set(expected)
    before = emulated_launches(PACKAGE)
    a, b, grad = _case(70, 9, 6, torch.float32)
    for name in NAMES:
        getattr(emulated, name)(a, b, *_args(name))
        getattr(emulated, f"_{name}_backward")(grad.float(), a, b, *_args(name))
    after = emulated_launches(PACKAGE)
    for kernel, count in expected.items():
        assert after.get(kernel, 0) - before.get(kernel, 0) == count, (kernel, before, after)


def test_bad_input_raises_the_cpu_message(emulated):
    a, b = torch.rand(3, 4), torch.rand(2, 4)
    cases = [
        ("generalized_box_iou", (a, torch.rand(2, 5))),
        ("distance_box_iou", (a, b.double(), 1e-7)),
        ("_complete_box_iou_backward", (torch.rand(2, 3), a, b, 1e-7)),
    ]
    for name, args in cases:
        with pytest.raises(RuntimeError) as cpu:
            getattr(torch.ops.detops, name)(*args)
        with pytest.raises(RuntimeError) as emu:
            getattr(emulated, name)(*args)
        assert str(emu.value).splitlines()[0] == str(cpu.value).splitlines()[0]
