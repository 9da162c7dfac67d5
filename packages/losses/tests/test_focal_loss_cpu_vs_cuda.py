"""sigmoid_focal_loss on CUDA against the same call on the CPU: the loss of every reduction
and both gradients, every dtype.

Tolerance (float64, float32) = (1e-12, 1e-6), relative to each result's largest magnitude
(detops_core.testing.cpu_vs_cuda_tolerance adds two ulps for float16/bfloat16): the kernels
share their per-element math, but nvcc may contract a * b + c into one fused multiply-add
(the CPU build forbids it) and uses its own exp/log1p/pow for float64, and the reductions
add in another order (both in double)."""

import pytest
import torch
from focal_loss_reference import adversarial_case, make_case

import detops_losses
from detops_core.testing import assert_cuda_matches_cpu, cpu_vs_cuda_tolerance, float_dtypes, requires_cuda

pytestmark = requires_cuda()

TOLERANCE = (1e-12, 1e-6)
CASES = [
    ("small", dict(shape=(37, 11))),
    ("dense_head", dict(shape=(3000, 80), positives=0.01)),
    ("soft", dict(shape=(300, 91), soft=True)),
]


def _run(inputs, targets, device, reduction, alpha, gamma):
    x = inputs.to(device).requires_grad_()
    t = targets.to(device).requires_grad_()
    loss = detops_losses.sigmoid_focal_loss(x, t, alpha, gamma, reduction)
    grad = torch.rand(loss.shape, generator=torch.Generator().manual_seed(2)).to(loss.dtype).to(device)
    return (loss, *torch.autograd.grad(loss, [x, t], grad))


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name,config", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.6, 1.5)])
def test_cuda_matches_cpu(name, config, reduction, dtype, alpha, gamma):
    inputs, targets = make_case(dtype=dtype, **config)
    cuda = _run(inputs, targets, "cuda", reduction, alpha, gamma)
    cpu = _run(inputs, targets, "cpu", reduction, alpha, gamma)
    tol = cpu_vs_cuda_tolerance(dtype, *TOLERANCE)
    for what, a, b in zip(("loss", "grad inputs", "grad targets"), cuda, cpu):
        assert_cuda_matches_cpu(a, b, tol, what=f"{name} {reduction} {what}")


def test_adversarial_logits_on_cuda():
    inputs, targets = adversarial_case()
    for reduction in ("none", "sum"):
        cuda = _run(inputs, targets, "cuda", reduction, 0.25, 2.0)
        cpu = _run(inputs, targets, "cpu", reduction, 0.25, 2.0)
        for what, a, b in zip(("loss", "grad inputs", "grad targets"), cuda, cpu):
            assert_cuda_matches_cpu(a, b, cpu_vs_cuda_tolerance(torch.float32, *TOLERANCE), what=what)


def test_cuda_sum_is_bitwise_repeatable():
    inputs, targets = make_case((2000, 91))
    x, t = inputs.cuda(), targets.cuda()
    first = detops_losses.sigmoid_focal_loss(x, t, reduction="sum")
    for _ in range(3):
        assert torch.equal(detops_losses.sigmoid_focal_loss(x, t, reduction="sum"), first)
