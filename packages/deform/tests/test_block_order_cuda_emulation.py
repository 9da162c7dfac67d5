"""deform_conv2d's CUDA backward with its blocks run in shuffled orders (the emulation's
block_schedule). col2im_kernel adds each column element into the input gradient at four
neighbours; with offsets that send many taps onto the same pixels, threads of different
blocks add into the same element. With float atomics the bits depend on the block order
(so the comparison can fail); with `deterministic=True` (autograd's choice under
torch.use_deterministic_algorithms) the fixed-point sum of detops/scatter_add.cuh gives the
same bits under every order. Both match the CPU kernel; the offset, mask, weight and bias
gradients (no atomics) are the same bits in every order."""

import pytest
import torch

from detops_core.testing import (
    assert_block_order_changes_bits,
    assert_same_bits_in_every_block_order,
    block_schedule,
    require_emulated_ops,
)

PACKAGE = "detops_deform"

TOLERANCE = {torch.float16: 2e-2, torch.bfloat16: 1e-1}  # narrow types against the CPU kernel


@pytest.fixture(scope="module")
def emu():
    return require_emulated_ops(PACKAGE)


def crowded(dtype):
    """(grad_out, input, offset, weight, mask): 2 images of 4 channels, 6 x 6, a 3 x 3
    kernel, offsets of up to 3 px, 288 columns per channel: 5 blocks of 256 threads."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, 6, generator=g, dtype=torch.float64)
    offset = 3 * torch.rand(2, 18, 4, 4, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 4, 3, 3, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 9, 4, 4, generator=g, dtype=torch.float64)
    grad_out = torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (grad_out, x, offset, weight, mask)]


def grads(ops, tensors, deterministic):
    return ops._deform_conv2d_backward(*tensors, 1, 1, 0, 0, 1, 1, True, True, True, deterministic)


def test_atomic_input_gradient_depends_on_the_block_order(emu):
    tensors = crowded(torch.float32)
    cpu = grads(torch.ops.detops, tensors, False)[0]
    assert_block_order_changes_bits(PACKAGE, lambda: grads(emu, tensors, False)[0], cpu)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_deterministic_gradients_are_the_same_in_every_block_order(emu, dtype):
    tensors = crowded(dtype)
    tolerance = TOLERANCE.get(dtype, 1e-5)
    cpu = grads(torch.ops.detops, tensors, False)
    assert_same_bits_in_every_block_order(PACKAGE, lambda: grads(emu, tensors, True), cpu, tolerance)


def test_deterministic_input_gradient_is_within_its_error_bound(emu):
    # float64: against the CPU's sum, relative to the sum of the contributions' magnitudes
    # (the input gradient of |grad_out| and |weight|, the mask being positive: every term
    # non-negative; the offsets, which place the samples, stay).
    tensors = crowded(torch.float64)
    with block_schedule(PACKAGE, 3):
        got = grads(emu, tensors, True)[0]
    grad_out, x, offset, weight, mask = tensors
    magnitude = grads(torch.ops.detops, [grad_out.abs(), x, offset, weight.abs(), mask], False)[0]
    error = (got - grads(torch.ops.detops, tensors, False)[0]).abs()
    assert magnitude.max() > 1 and bool((error <= 2.0**-40 * magnitude).all()), f"largest error {error.max():.3g}"
