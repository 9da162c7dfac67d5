"""Bad calls of sigmoid_focal_loss: the wrapper raises torchvision's ValueErrors for alpha
and reduction (same type and message); the native op raises a RuntimeError naming the
argument and the expectation, eagerly and when traced (torch.compile, torch.export)."""

import pytest
import torch
from focal_loss_reference import make_case

import detops_losses
from detops_core.testing import assert_traced_raises_like_native, requires_cuda, torchvision_ops

ops = torch.ops.detops
TV = torchvision_ops()


def _raised(fn, *args, **kwargs):
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    return type(info.value), str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [dict(alpha=1.5), dict(alpha=-0.5), dict(alpha=float("nan")), dict(reduction="max"), dict(reduction="")],
    ids=["alpha_above_1", "alpha_negative_not_minus_1", "alpha_nan", "reduction_max", "reduction_empty"],
)
def test_wrapper_errors_are_torchvisions(kwargs):
    inputs, targets = make_case((3, 4))
    kind, message = _raised(detops_losses.sigmoid_focal_loss, inputs, targets, **kwargs)
    assert kind is ValueError
    if TV is not None:
        assert (kind, message) == _raised(TV.sigmoid_focal_loss, inputs, targets, **kwargs)


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.zeros(3, 4), torch.zeros(4, 3)), r"targets must have the shape of inputs \[3, 4\], got \[4, 3\]"),
        ((torch.zeros(3, 4), torch.zeros(3, 4, 1)), r"targets must have the shape of inputs"),
        ((torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3, 4)), r"inputs must be a floating-point tensor.*int64"),
        ((torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.int64)), r"targets must be a floating-point tensor.*int64"),
        ((torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.bool)), r"targets must be a floating-point tensor.*bool"),
    ],
    ids=["shape", "rank", "int_inputs", "int_targets", "bool_targets"],
)
def test_wrapper_bad_tensors_raise_native_errors(args, match):
    with pytest.raises(RuntimeError, match=r"detops.sigmoid_focal_loss: " + match):
        detops_losses.sigmoid_focal_loss(*args)


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.zeros(2), torch.zeros(2), 1.5, 2.0, "none"), r"alpha must be in \[0, 1\].*got 1.5"),
        ((torch.zeros(2), torch.zeros(2), float("nan"), 2.0, "none"), r"alpha must be in \[0, 1\]"),
        ((torch.zeros(2), torch.zeros(2), 0.25, 2.0, "avg"), r"reduction must be 'none', 'mean' or 'sum', got 'avg'"),
        (
            (torch.zeros(2), torch.zeros(2, dtype=torch.float64), 0.25, 2.0, "none"),
            r"inputs and targets must have the same dtype, got float32 and float64",
        ),
    ],
    ids=["alpha", "alpha_nan", "reduction", "dtypes"],
)
def test_native_op_errors(args, match):
    with pytest.raises(RuntimeError, match=r"detops.sigmoid_focal_loss: " + match):
        ops.sigmoid_focal_loss(*args)


@pytest.mark.parametrize(
    "grad,reduction,match",
    [
        (torch.zeros(3), "none", r"grad_output must have the shape of inputs \[2, 3\] \(reduction 'none'\), got \[3\]"),
        (torch.zeros(1), "sum", r"grad_output must be a 0-dim tensor \(reduction 'mean' or 'sum'\), got shape \[1\]"),
        (torch.zeros((), dtype=torch.float64), "mean", r"inputs and grad_output must have the same dtype"),
    ],
)
def test_backward_op_errors(grad, reduction, match):
    with pytest.raises(RuntimeError, match=r"detops._sigmoid_focal_loss_backward: " + match):
        ops._sigmoid_focal_loss_backward(grad, torch.zeros(2, 3), torch.zeros(2, 3), 0.25, 2.0, reduction, True)


@pytest.mark.parametrize(
    "args",
    [
        (torch.zeros(3, 4), torch.zeros(4, 3), 0.25, 2.0, "none"),
        (torch.zeros(3, 4), torch.zeros(3, 4), 0.25, 2.0, "avg"),
        (torch.zeros(3, 4), torch.zeros(3, 4), 2.0, 2.0, "sum"),
    ],
    ids=["shape", "reduction", "alpha"],
)
def test_traced_calls_raise_like_native(args):
    message = assert_traced_raises_like_native(ops.sigmoid_focal_loss.default, args)
    assert message.startswith("detops.sigmoid_focal_loss: ")


@requires_cuda()
def test_devices_must_match():
    with pytest.raises(RuntimeError, match="inputs and targets must be on the same device"):
        ops.sigmoid_focal_loss(torch.zeros(3, device="cuda"), torch.zeros(3), 0.25, 2.0, "none")
