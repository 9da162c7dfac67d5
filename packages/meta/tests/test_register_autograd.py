"""detops_core.autograd.register_autograd, the glue every native op's gradient goes through,
on an op of its own (a Python kernel, so the test needs no native code): what the backward
receives, the gradients returned, and the errors for names the schema does not have."""

import pytest
import torch

from detops_core.autograd import register_autograd

_lib = torch.library.Library("detops_autograd_test", "FRAGMENT")
_lib.define("affine(Tensor x, Tensor w, Tensor b, float scale=2.0) -> Tensor")
_lib.define("affine_bad(Tensor x, Tensor w, Tensor b, float scale=2.0) -> Tensor")


def _affine(x, w, b, scale=2.0):
    return x * w * scale + b


_lib.impl("affine", _affine, "CPU")
_lib.impl("affine_bad", _affine, "CPU")
_seen = []


def _affine_grads(args, grad):
    _seen.append(args)
    return {
        "x": grad * args.w * args.scale,
        "w": grad * args.x * args.scale,
        "b": grad.sum_to_size(args.b),  # b is not saved: its shape arrives
    }


register_autograd("detops_autograd_test::affine", _affine_grads, save=("x", "w"))
register_autograd("detops_autograd_test::affine_bad", lambda args, grad: {"bias": grad}, save=("x",))
_op = torch.ops.detops_autograd_test


def test_gradients_match_the_composition():
    g = torch.Generator().manual_seed(0)
    x, w = (torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: _op.affine(*a, 0.5), (x, w, b))
    out = _op.affine(x, w, b, 0.5)
    grads = torch.autograd.grad(out, (x, w, b), torch.ones_like(out))
    expected = torch.autograd.grad(_affine(x, w, b, 0.5), (x, w, b), torch.ones_like(out))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_backward_sees_saved_tensors_shapes_values_and_needs_grad():
    x = torch.randn(2, 3, requires_grad=True)
    w = torch.randn(2, 3)
    b = torch.randn(3, requires_grad=True)
    _seen.clear()
    _op.affine(x, w, b).sum().backward()  # scale left at its default
    (args,) = _seen
    assert args.x is not None and torch.equal(args.x, x) and torch.equal(args.w, w)
    assert args.b == torch.Size([3]) and args.scale == 2.0
    assert args.needs_grad == {"x": True, "w": False, "b": True, "scale": False}
    assert w.grad is None and b.grad is not None


def test_gradient_for_an_unknown_argument_is_an_error():
    x = torch.randn(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"unknown arguments \['bias'\]"):
        _op.affine_bad(x, torch.ones(2), torch.zeros(2)).sum().backward()


def test_saving_an_unknown_argument_is_an_error():
    with pytest.raises(ValueError, match=r"has no argument\(s\) \['y'\]"):
        register_autograd("detops_autograd_test::affine", _affine_grads, save=("y",))
