"""The CUDA kernels of sigmoid_focal_loss and its backward (csrc/cuda/focal_loss_kernel.cu),
run by the CPU emulation of the CUDA execution model (detops/cuda_emulation.h) and compared
with the CPU kernels.

What must be equal, and why: both devices share the entry point, checks and allocation
(focal_loss_entry.h) and the per-element math (focal_loss_math.h), and a thread computes
its element with the CPU loop's expression: the unreduced loss and both gradients must be
bitwise equal (NaN where the CPU has NaN).

The mean and sum are the exception: both devices add the float32 (or float64) losses in
double, in fixed chunks of kReduceChunk elements, but in another order inside a chunk (CPU:
eight interleaved lanes; CUDA: threads striding, then a tree). The losses are non-negative,
so two orders of summing n of them differ by at most (n - 1) * 2^-52 of the sum; rounded to
float32 that is at most one unit in its last place (float16/bfloat16: one of theirs).
"""

import pytest
import torch
from focal_loss_reference import adversarial_case, make_case

from detops_core.testing import block_schedule, emulated_widest, require_emulated_ops

PACKAGE = "detops_losses"
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(0,), (1,), (37, 11)]
PARAMS = [(0.25, 2.0), (-1.0, 0.0), (0.6, 1.5)]
# Every (alpha, gamma) on the small shapes (each gamma has its own per-element code); the
# reductions across 13 chunks (the last one ragged), which depend on the size alone, once
# per dtype.
CASES = [(shape, a, g) for shape in SHAPES for a, g in PARAMS] + [((3, 8200), *PARAMS[0])]


@pytest.fixture(scope="module")
def emulated():
    return require_emulated_ops(PACKAGE)


def assert_same(actual, expected, what):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{what}: {m}")


def assert_sum_close(actual, expected, n, what):
    assert actual.shape == expected.shape == () and actual.dtype == expected.dtype, what
    ulp = torch.finfo(expected.dtype).eps if expected.dtype != torch.float64 else 0.0
    rtol = ulp + n * 2.0**-52
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=0, equal_nan=True, msg=lambda m: f"{what}: {m}")


def check_case(ops, inputs, targets, alpha, gamma):
    cpu = torch.ops.detops
    n = inputs.numel()
    for reduction in ("none", "mean", "sum"):
        got = ops.sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction)
        expected = cpu.sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction)
        if reduction == "none":
            assert_same(got, expected, "loss")
            grad = torch.rand(inputs.shape, generator=torch.Generator().manual_seed(3)).to(inputs.dtype)
        else:
            assert_sum_close(got, expected, n, reduction)
            grad = torch.tensor(0.75, dtype=inputs.dtype)
        for need_targets in (True, False):
            emu = ops._sigmoid_focal_loss_backward(grad, inputs, targets, alpha, gamma, reduction, need_targets)
            ref = cpu._sigmoid_focal_loss_backward(grad, inputs, targets, alpha, gamma, reduction, need_targets)
            assert_same(emu[0], ref[0], f"grad inputs ({reduction})")
            assert_same(emu[1], ref[1], f"grad targets ({reduction}, need_targets={need_targets})")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,alpha,gamma", CASES, ids=[f"{s}-alpha{a}_gamma{g}" for s, a, g in CASES])
def test_forward_and_backward_equal_cpu(emulated, shape, dtype, alpha, gamma):
    check_case(emulated, *make_case(shape, dtype=dtype, soft=dtype == torch.float64), alpha, gamma)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_adversarial_and_non_finite(emulated, dtype):
    inputs, targets = adversarial_case(dtype)
    inputs = torch.cat([inputs.view(-1), torch.tensor([float("inf"), -float("inf"), float("nan"), 2.0], dtype=dtype)])
    targets = torch.cat([targets.view(-1), torch.tensor([0.0, 1.0, 0.5, float("nan")], dtype=dtype)])
    for alpha, gamma in PARAMS + [(0.25, 0.5)]:
        check_case(emulated, inputs, targets, alpha, gamma)


def test_sum_is_repeatable(emulated):
    inputs, targets = make_case((5, 8192), scale=3.0)
    first = emulated.sigmoid_focal_loss(inputs, targets, 0.25, 2.0, "sum")
    assert torch.equal(emulated.sigmoid_focal_loss(inputs, targets, 0.25, 2.0, "sum"), first)


def test_shared_memory_blocks_run_one_at_a_time(emulated):
    # The reduction kernels keep partial sums in __shared__ memory, one copy for every block
    # in the emulation: asked for four blocks at once, the emulation must still run them one
    # at a time (their file declares __shared__), else the sums would mix or it would abort.
    inputs, targets = make_case((5, 8192), scale=3.0)
    one_at_a_time = emulated.sigmoid_focal_loss(inputs, targets, 0.25, 2.0, "sum")
    for seed in (1, 2):
        with block_schedule(PACKAGE, seed, at_once=4):
            again = emulated.sigmoid_focal_loss(inputs, targets, 0.25, 2.0, "sum")
        assert torch.equal(again, one_at_a_time)
    assert emulated_widest(PACKAGE)["focal_loss partial_sums_kernel"] == 1


def test_errors_match_cpu(emulated):
    with pytest.raises(RuntimeError, match=r"targets must have the shape of inputs \[3\], got \[2\]"):
        emulated.sigmoid_focal_loss(torch.zeros(3), torch.zeros(2), 0.25, 2.0, "none")
