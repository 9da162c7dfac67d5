"""multi_scale_deformable_attention's CUDA backward with its blocks run in shuffled orders
(the emulation's block_schedule). backward_kernel adds each sample's share of grad_output
into the value gradient at four neighbours; with many queries sampling a small map, threads
of different blocks add into the same element. With float atomics the bits depend on the
block order (so the comparison can fail); with `deterministic=True` (autograd's choice under
torch.use_deterministic_algorithms) the fixed-point sum of detops/scatter_add.cuh gives the
same bits under every order. Both match the CPU kernel; the location and weight gradients
(one writer each) are the same bits in every order."""

import pytest
import torch

from detops_core.testing import (
    assert_block_order_changes_bits,
    assert_same_bits_in_every_block_order,
    block_schedule,
    emulated_widest,
    require_emulated_ops,
)

PACKAGE = "detops_deform_attn"

TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2}  # narrow types against the CPU kernel


@pytest.fixture(scope="module")
def emu():
    return require_emulated_ops(PACKAGE)


def crowded(dtype):
    """(grad, value, shapes, locations, weights): 100 queries, 2 heads, 2 levels (4 x 5 and
    2 x 3), 4 points: 1,600 samples onto 26 value positions, 7 blocks of 256 threads."""
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[4, 5], [2, 3]])
    value = torch.randn(1, 26, 2, 4, generator=g, dtype=torch.float64)
    locations = torch.rand(1, 100, 2, 2, 4, 2, generator=g, dtype=torch.float64)
    weights = torch.rand(1, 100, 2, 2, 4, generator=g, dtype=torch.float64)
    grad = torch.randn(1, 100, 8, generator=g, dtype=torch.float64)
    return [grad.to(dtype), value.to(dtype), shapes, locations.to(dtype), weights.to(dtype)]


def grads(ops, tensors, deterministic):
    return ops._multi_scale_deformable_attention_backward(*tensors, None, True, True, deterministic)


def test_atomic_value_gradient_depends_on_the_block_order(emu):
    tensors = crowded(torch.float32)
    cpu = grads(torch.ops.detops, tensors, False)[0]
    assert_block_order_changes_bits(PACKAGE, lambda: grads(emu, tensors, False)[0], cpu)
    # The schedules include four blocks running at once (the file has no __shared__).
    assert emulated_widest(PACKAGE)["deform_attn backward_kernel"] == 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_deterministic_gradients_are_the_same_in_every_block_order(emu, dtype):
    tensors = crowded(dtype)
    tolerance = TOLERANCE.get(dtype, 1e-5)
    cpu = grads(torch.ops.detops, tensors, False)
    assert_same_bits_in_every_block_order(PACKAGE, lambda: grads(emu, tensors, True), cpu, tolerance)


def test_deterministic_value_gradient_is_within_its_error_bound(emu):
    # float64: against the CPU's sum, relative to the sum of the contributions' magnitudes
    # (the value gradient of |grad|: the weights are not negative).
    tensors = crowded(torch.float64)
    with block_schedule(PACKAGE, 3):
        got = grads(emu, tensors, True)[0]
    magnitude = grads(torch.ops.detops, [tensors[0].abs(), *tensors[1:]], False)[0]
    error = (got - grads(torch.ops.detops, tensors, False)[0]).abs()
    assert magnitude.max() > 1 and bool((error <= 2.0**-40 * magnitude).all()), f"largest error {error.max():.3g}"
