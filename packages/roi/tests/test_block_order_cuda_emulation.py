"""The RoI ops' CUDA kernels with their blocks run in shuffled orders (the emulation's
block_schedule): what is bitwise repeatable on a GPU and what is not.

- The forward kernels write each output element from one thread, from the same terms in
  the same order: every schedule gives the same bits.
- The backward kernels add into the input gradient from many threads. Where the RoIs
  overlap, threads of different blocks add into the same element. With float atomics (the
  default) the float sum depends on the order the blocks and threads run in: different
  schedules give different bits, which shows that comparing schedules can fail. With
  `deterministic=True` (what autograd passes under torch.use_deterministic_algorithms)
  they sum in fixed point (detops/scatter_add.cuh): the same bits under every schedule.
- Both are compared with the CPU kernels: float32 within 1e-5, and the deterministic sum
  in float64 within the bound scatter_add.cuh states, far below float64's own summation
  error (2^-40 of the sum of the contributions' magnitudes is checked).
"""

import pytest
import torch
from roi_cases import backward_args, op_args

from detops_core.testing import (
    assert_block_order_changes_bits,
    assert_same_bits_in_every_block_order,
    block_schedule,
    require_emulated_ops,
)

PACKAGE = "detops_roi"
OPS = ["roi_align", "ps_roi_align", "roi_pool", "ps_roi_pool", "roi_align_rotated", "multi_level_roi_align"]
SIZE = (2, 2)


@pytest.fixture(scope="module")
def emu():
    return require_emulated_ops(PACKAGE)


def crowded(op, dtype=torch.float32):
    """Many RoIs over small maps, nearly the same box: their sums collide. (inputs, rois)."""
    g = torch.Generator().manual_seed(0)
    channels = 2 * 2 * 2 if op.startswith("ps_") else 2
    x = torch.randn(1, channels, 8, 8, generator=g, dtype=dtype)
    k = 64
    corners = torch.tensor([1.0, 1.0, 6.0, 6.0]) + 0.25 * torch.rand(k, 4, generator=g)
    if op == "roi_align_rotated":  # (cx, cy, w, h, degrees)
        centre, extent = (corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]
        corners = torch.cat([centre, extent, 10 * torch.rand(k, 1, generator=g)], 1)
    rois = torch.cat([torch.zeros(k, 1), corners], 1).to(dtype)
    if op == "multi_level_roi_align":
        return [x, torch.randn(1, 2, 4, 4, generator=g, dtype=dtype)], rois
    return x, rois


def _levels(rois):
    return torch.arange(rois.shape[0]) % 2


def forward(ops, op, x, rois):
    if op == "multi_level_roi_align":
        return ops.multi_level_roi_align(x, [1.0, 0.5], rois, _levels(rois), *SIZE, -1, True), None
    result = getattr(ops, op)(*op_args(op, x, rois, SIZE))
    return result if op == "roi_pool" else (result, None)


def backward(ops, op, grad, x, rois, argmax, deterministic):
    if op == "multi_level_roi_align":
        heights, widths = [f.shape[2] for f in x], [f.shape[3] for f in x]
        n, c = x[0].shape[:2]
        args = (grad, rois, _levels(rois), [1.0, 0.5], heights, widths, n, c, *SIZE, -1, True, deterministic)
        return torch.cat([g.flatten() for g in ops._multi_level_roi_align_backward(*args)])
    args = backward_args(op, grad, rois, x.shape, SIZE, 1.0, -1, True, argmax=argmax, deterministic=deterministic)
    return getattr(ops, f"_{op}_backward")(*args)


def emulated_grad(emu, op, x, rois, deterministic, grad=None):
    """A function giving the input gradient of `op`'s emulated kernels (forward for argmax)."""

    def run():
        out, argmax = forward(emu, op, x, rois)
        g = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape) if grad is None else grad
        return backward(emu, op, g, x, rois, argmax, deterministic)

    return run


def cpu_grad(op, x, rois, grad=None):
    out, argmax = forward(torch.ops.detops, op, x, rois)
    if grad is None:
        grad = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    return backward(torch.ops.detops, op, grad, x, rois, argmax, False)


@pytest.mark.parametrize("op", OPS)
def test_forward_is_the_same_in_every_block_order(emu, op):
    x, rois = crowded(op)
    expected = forward(torch.ops.detops, op, x, rois)[0]
    assert_same_bits_in_every_block_order(PACKAGE, lambda: forward(emu, op, x, rois)[0], expected)


@pytest.mark.parametrize("op", OPS)
def test_atomic_backward_depends_on_the_block_order(emu, op):
    x, rois = crowded(op)
    assert_block_order_changes_bits(PACKAGE, emulated_grad(emu, op, x, rois, False), cpu_grad(op, x, rois))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_deterministic_backward_is_the_same_in_every_block_order(emu, op, dtype):
    x, rois = crowded(op, dtype)
    tolerance = {torch.float16: 1e-3, torch.bfloat16: 1e-2}.get(dtype, 1e-5)
    run = emulated_grad(emu, op, x, rois, True)
    assert_same_bits_in_every_block_order(PACKAGE, run, cpu_grad(op, x, rois), tolerance)


@pytest.mark.parametrize("op", OPS)
def test_deterministic_backward_is_within_its_error_bound(emu, op):
    # float64: the fixed-point sum against the CPU's float64 sum, relative to the sum of
    # the contributions' magnitudes (the backward of |grad|: the weights are not negative).
    x, rois = crowded(op, torch.float64)
    with block_schedule(PACKAGE, 1):
        got = emulated_grad(emu, op, x, rois, True)()
    out, _ = forward(torch.ops.detops, op, x, rois)
    grad = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    magnitude = cpu_grad(op, x, rois, grad.abs())
    error = (got - cpu_grad(op, x, rois, grad)).abs()
    assert magnitude.max() > 1 and bool((error <= 2.0**-40 * magnitude).all()), f"largest error {error.max():.3g}"


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_deterministic_backward_keeps_infinities_and_nans(emu, op):
    x, rois = crowded(op)
    out, _ = forward(torch.ops.detops, op, x, rois)
    grad = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    grad[0, 0, 0, 0] = float("inf")  # overlaps the other RoIs: an infinite element
    grad[5, 1, 1, 1] = float("nan")
    grad[9, 0, 1, 0] = -float("inf")
    want = cpu_grad(op, x, rois, grad)
    assert want.isinf().any() and want.isnan().any() and want.isfinite().any()
    assert_same_bits_in_every_block_order(PACKAGE, emulated_grad(emu, op, x, rois, True, grad), want)
