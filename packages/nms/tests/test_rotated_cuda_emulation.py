"""box_iou_rotated, nms_rotated and batched_nms_rotated through their CUDA kernels
(csrc/cuda/nms_rotated_kernel.cu: iou_kernel, mask_kernel, keep_kernel, rank_kernel), run by the
CPU emulation of the CUDA execution model (detops/cuda_emulation.h), against the CPU
kernels.

Results must be equal: the emulation compiles rotated_math.h's host branch, the same double
operations as the CPU kernels. (On a GPU, CUDA's cos/sin and fma contraction may move an IoU
by ~1e-15; test_cpu_vs_cuda-style bounds apply there, not here.)
"""

import os
import re

import pytest
import torch
from rotated_reference import random_rotated

from detops_core.testing import emulated_launches, require_emulated_ops

PACKAGE = "detops_nms"
CUDA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "csrc", "cuda", "nms_rotated_kernel.cu")
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# One box; a partial tile; exactly one tile; a tile and one box; several words with a ragged
# last tile, so keep_kernel carries suppression across words and threads.
SIZES = [1, 2, 63, 64, 65, 300]


@pytest.fixture(scope="module")
def emulated():
    return require_emulated_ops(PACKAGE)


def _case(n, seed, ties=False):
    g = torch.Generator().manual_seed(seed)
    boxes = random_rotated(n, g, spread=10.0 + n / 4, size=12.0)
    if ties:
        scores = torch.randint(0, 5, (n,), generator=g).double() / 4
    else:
        scores = torch.rand(n, generator=g, dtype=torch.float64)
    return boxes, scores, torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_box_iou_rotated_equals_cpu(emulated, n, dtype):
    a, _, _ = _case(n, n)
    b, _, _ = _case(17, n + 1)
    a, b = a.to(dtype), b.to(dtype)
    assert torch.equal(emulated.box_iou_rotated(a, b), torch.ops.detops.box_iou_rotated(a, b))
    assert torch.equal(emulated.box_iou_rotated(b, a), torch.ops.detops.box_iou_rotated(b, a))


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_nms_rotated_equals_cpu(emulated, n, dtype, ties, threshold):
    boxes, scores, idxs = _case(n, 7 * n + 3 * ties + int(10 * threshold), ties)
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    assert torch.equal(
        emulated.nms_rotated(boxes, scores, threshold), torch.ops.detops.nms_rotated(boxes, scores, threshold)
    )
    assert torch.equal(
        emulated.batched_nms_rotated(boxes, scores, idxs, threshold),
        torch.ops.detops.batched_nms_rotated(boxes, scores, idxs, threshold),
    )


def test_non_contiguous_and_non_finite(emulated):
    boxes, scores, idxs = _case(130, 5)
    boxes[3, 0] = float("nan")
    boxes[70, 4] = float("inf")
    wide = torch.zeros(130, 11, dtype=torch.float64)
    wide[:, 1:11:2] = boxes
    strided = wide[:, 1:11:2]
    assert not strided.is_contiguous()
    torch.testing.assert_close(
        emulated.box_iou_rotated(strided, strided),
        torch.ops.detops.box_iou_rotated(boxes, boxes),
        rtol=0,
        atol=0,
        equal_nan=True,
    )
    assert torch.equal(emulated.nms_rotated(strided, scores, 0.4), torch.ops.detops.nms_rotated(boxes, scores, 0.4))
    assert torch.equal(
        emulated.batched_nms_rotated(strided, scores, idxs, 0.4),
        torch.ops.detops.batched_nms_rotated(boxes, scores, idxs, 0.4),
    )


def test_every_kernel_is_launched(emulated):
    with open(CUDA_FILE) as f:
        kernels = {f"nms_rotated {k}" for k in re.findall(r"__global__\s+void\s+(\w+)", f.read())}
    assert kernels == {
        "nms_rotated iou_kernel",
        "nms_rotated mask_kernel",
        "nms_rotated keep_kernel",
        "nms_rotated rank_kernel",
    }
    before = emulated_launches(PACKAGE)
    boxes, scores, idxs = _case(130, 6)
    emulated.box_iou_rotated(boxes, boxes)
    emulated.nms_rotated(boxes, scores, 0.5)
    emulated.batched_nms_rotated(boxes, scores, idxs, 0.5)
    after = emulated_launches(PACKAGE)
    expected = {
        "nms_rotated iou_kernel": 1,
        "nms_rotated mask_kernel": 2,
        "nms_rotated keep_kernel": 2,
        "nms_rotated rank_kernel": 1,
    }
    for kernel, count in expected.items():
        assert after.get(kernel, 0) - before.get(kernel, 0) == count, (kernel, before, after)


def test_bad_input_raises_the_cpu_message(emulated):
    b5, s = torch.rand(3, 5), torch.rand(3)
    cases = [
        ("box_iou_rotated", (torch.rand(3, 4), b5)),
        ("nms_rotated", (b5, torch.rand(4), 0.5)),
        ("batched_nms_rotated", (b5, s, torch.zeros(3, dtype=torch.int32), 0.5)),
    ]
    for name, args in cases:
        with pytest.raises(RuntimeError) as cpu:
            getattr(torch.ops.detops, name)(*args)
        with pytest.raises(RuntimeError) as emu:
            getattr(emulated, name)(*args)
        assert str(emu.value).splitlines()[0] == str(cpu.value).splitlines()[0]


def test_grid_limit_is_refused_before_any_launch(emulated):
    n = 65535 * 64 + 1  # one row tile more than gridDim.y holds
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]]).expand(n, 5)
    scores = torch.zeros(1).expand(n)
    before = emulated_launches(PACKAGE)
    with pytest.raises(RuntimeError, match=r"at most 4194240 boxes are supported on this device, got 4194241"):
        emulated.nms_rotated(boxes, scores, 0.5)
    assert emulated_launches(PACKAGE) == before
