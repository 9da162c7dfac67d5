"""sigmoid_focal_loss inside PyTorch's machinery: opcheck, TorchScript, torch.compile
(fullgraph, forward and backward), torch.export (dynamic sizes), autocast, and the refusal
of double backward."""

import pytest
import torch
from focal_loss_reference import make_case

import detops_losses
from detops_core.testing import (
    assert_compiles,
    assert_exports,
    assert_opcheck,
    assert_scripts,
    devices,
    to_device,
    torchvision_ops,
)

ops = torch.ops.detops
TV = torchvision_ops()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize(
    "shape,reduction",
    # No empty mean: it is NaN, and opcheck compares NaN unequal to itself.
    [((13, 7), "none"), ((13, 7), "mean"), ((13, 7), "sum"), ((0, 5), "none"), ((0, 5), "sum")],
)
def test_opcheck(device, shape, reduction):
    inputs, targets = to_device(make_case(shape), device)
    assert_opcheck(ops.sigmoid_focal_loss.default, (inputs.requires_grad_(), targets, 0.25, 2.0, reduction))
    assert_opcheck(ops.sigmoid_focal_loss.default, (inputs, targets.requires_grad_(), -1.0, 1.5, reduction))
    grad = torch.ones(inputs.shape if reduction == "none" else (), device=device)
    for need in (False, True):
        assert_opcheck(
            ops._sigmoid_focal_loss_backward.default,
            (grad, inputs.detach(), targets.detach(), 0.25, 0.0, reduction, need),
        )


def test_opcheck_defaults():
    inputs, targets = make_case((4, 3))
    assert_opcheck(ops.sigmoid_focal_loss.default, (inputs.requires_grad_(), targets))


@pytest.mark.parametrize("device", devices())
def test_torchscript(device):
    inputs, targets = to_device(make_case((9, 5)), device)
    scripted = assert_scripts(detops_losses.sigmoid_focal_loss, (inputs, targets))
    for kwargs in (dict(reduction="sum"), dict(alpha=-1.0, gamma=0.0, reduction="mean")):
        assert torch.equal(
            scripted(inputs, targets, **kwargs), detops_losses.sigmoid_focal_loss(inputs, targets, **kwargs)
        )
    with pytest.raises(Exception, match="Invalid Value for arg 'reduction'"):
        scripted(inputs, targets, reduction="max")


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_compile_fullgraph_forward_and_backward(device, reduction):
    inputs, targets = to_device(make_case((11, 6), soft=True), device)

    def loss(x, t):
        out = detops_losses.sigmoid_focal_loss(x, t, alpha=0.3, gamma=1.5, reduction=reduction)
        return out.sum() if reduction == "none" else out

    # Inductor's sum of the unreduced loss may round differently from eager's.
    tol = dict(rtol=1e-6, atol=1e-6) if reduction == "none" else {}
    assert_compiles(loss, (inputs.requires_grad_(), targets.requires_grad_()), backward=True, **tol)


@pytest.mark.parametrize("device", devices())
def test_export_dynamic_sizes(device):
    inputs, targets = to_device(make_case((12, 5)), device)
    other = to_device(make_case((7, 9), seed=3), device)

    n, c = torch.export.Dim("n"), torch.export.Dim("c")
    assert_exports(Losses(), (inputs, targets), dynamic_shapes=({0: n, 1: c}, {0: n, 1: c}), more_args=[other])


class Losses(torch.nn.Module):
    def forward(self, x, t):
        return detops_losses.sigmoid_focal_loss(x, t), detops_losses.sigmoid_focal_loss(x, t, reduction="mean")


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_autocast_returns_float32_like_torchvision(device, dtype, reduction):
    """Under autocast the arguments are computed in float32 and the loss is float32, as
    torchvision's (its binary_cross_entropy_with_logits autocasts to float32)."""
    inputs, targets = (t.to(dtype) for t in to_device(make_case((10, 8)), device))
    with torch.autocast(device, dtype=dtype):
        got = detops_losses.sigmoid_focal_loss(inputs, targets, reduction=reduction)
        theirs = TV.sigmoid_focal_loss(inputs, targets, reduction=reduction) if TV is not None else None
    expected = detops_losses.sigmoid_focal_loss(inputs.float(), targets.float(), reduction=reduction)
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)
    if theirs is not None:
        assert theirs.dtype == got.dtype
        torch.testing.assert_close(got, theirs, rtol=1e-2, atol=1e-3)  # torchvision's sigmoid runs in the narrow type


def test_autocast_backward():
    inputs, targets = make_case((6, 4))
    x = inputs.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = detops_losses.sigmoid_focal_loss(x, targets.bfloat16(), reduction="sum")
    (grad,) = torch.autograd.grad(loss, [x])
    assert grad.dtype == torch.bfloat16
    w = x.detach().float().requires_grad_()
    (expected,) = torch.autograd.grad(
        detops_losses.sigmoid_focal_loss(w, targets.bfloat16().float(), reduction="sum"), [w]
    )
    assert torch.equal(grad, expected.bfloat16())


def test_double_backward_is_refused():
    inputs, targets = make_case((5, 3))
    x = inputs.requires_grad_()
    loss = detops_losses.sigmoid_focal_loss(x, targets, reduction="sum")
    (grad,) = torch.autograd.grad(loss, [x], create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        grad.sum().backward()
