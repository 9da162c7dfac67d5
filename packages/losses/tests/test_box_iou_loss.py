"""generalized_box_iou_loss, distance_box_iou_loss and complete_box_iou_loss (native ops and
their native backward ops) against torchvision 0.29.1 (box_iou_loss_reference.py where
torchvision is missing): values and gradients for every reduction and float dtype, integer
and broadcast boxes, ties, degenerate / NaN / infinite / huge boxes, empty input, eps;
float64 gradcheck; bitwise repeatable reductions; bad input; and the ops inside PyTorch's
machinery (opcheck, TorchScript, torch.compile, torch.export, autocast, CUDA vs CPU).

complete_box_iou_loss is not gradchecked: like torchvision's, its gradient treats alpha as
a constant (computed under no_grad), so it is not the numerical derivative; its gradient is
compared with torchvision's autograd in float64 instead, tightly.
"""

import pytest
import torch
from box_iou_loss_reference import (
    adversarial_pairs,
    random_pairs,
    reference_complete_box_iou_loss,
    reference_distance_box_iou_loss,
    reference_generalized_box_iou_loss,
)

import detops_losses
from detops_core.testing import (
    assert_compiles,
    assert_cuda_matches_cpu,
    assert_exports,
    assert_opcheck,
    assert_scripts,
    assert_traced_raises_like_native,
    call,
    cpu_vs_cuda_tolerance,
    devices,
    float_dtypes,
    oracles,
    register_op,
    requires_cuda,
)

ops = torch.ops.detops
NAMES = ["generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"]
register_op("generalized_box_iou_loss", detops_losses.generalized_box_iou_loss, reference_generalized_box_iou_loss)
register_op("distance_box_iou_loss", detops_losses.distance_box_iou_loss, reference_distance_box_iou_loss)
register_op("complete_box_iou_loss", detops_losses.complete_box_iou_loss, reference_complete_box_iou_loss)
ORACLE_CASES = [(n, o) for n in NAMES for o in oracles(n)]
REDUCTIONS = ["none", "mean", "sum"]
NARROW = (torch.float16, torch.bfloat16)


def _fn(name):
    return getattr(detops_losses, name)


def _pairs(seed, n=300, integer=False, adversarial=False):
    a, b = random_pairs(n, torch.Generator().manual_seed(seed), integer=integer)
    if adversarial:
        x, y = adversarial_pairs()
        a, b = torch.cat((a, x)), torch.cat((b, y))
    return a, b


def _with_grads(fn, a, b, grad_out=None, **kwargs):
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    out = fn(a, b, **kwargs)
    g = torch.ones_like(out) if grad_out is None else grad_out.to(out.dtype).reshape(out.shape)
    out.backward(g)
    return out.detach(), a.grad, b.grad


def _oracle(name, oracle, a, b, **kwargs):
    fn = lambda x, y, **kw: call(name, oracle, x, y, **kw)  # noqa: E731
    if oracle == "reference" and a.dtype != torch.float64:
        out = fn(a.double(), b.double(), **kwargs)
        return out.to(torch.float32 if a.dtype in NARROW else a.dtype)
    return fn(a, b, **kwargs)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,oracle", ORACLE_CASES)
def test_values_match(name, oracle, dtype, reduction):
    a, b = _pairs(1, adversarial=reduction == "none")
    a, b = a.to(dtype), b.to(dtype)
    got = _fn(name)(a, b, reduction=reduction)
    expected = _oracle(name, oracle, a, b, reduction=reduction)
    assert got.dtype == (torch.float32 if dtype in NARROW else dtype) and got.shape == expected.shape
    if reduction != "none":
        # detops sums in double; torch in the compute type, in its own order.
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(got, expected.to(got.dtype), rtol=tol, atol=tol)
    elif oracle == "torchvision" and name != "complete_box_iou_loss":
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)  # same operations
    else:
        # The C library's atan and torch's vectorised one may differ in the last place; the
        # reference computes in float64, which does not overflow where float32 does.
        tol = 1e-12 if dtype == torch.float64 else (1e-5 if oracle == "torchvision" else 2e-2)
        finite = torch.isfinite(got) & torch.isfinite(expected)
        torch.testing.assert_close(got[finite], expected[finite], rtol=tol, atol=tol)
        if oracle == "torchvision" or dtype == torch.float64:
            assert torch.equal(got.isnan(), expected.isnan())


def _grad_tol(dtype, grads):
    scale = max(float(g.nan_to_num().abs().max()) for g in grads)
    rtol = {torch.float64: 1e-11, torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    return {"rtol": rtol, "atol": rtol * max(scale, 1e-30)}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("integer", [False, True], ids=["random", "ties"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,oracle", ORACLE_CASES)
def test_gradients_match(name, oracle, dtype, integer, reduction):
    a, b = _pairs(2, 200, integer=integer)
    b[7] = a[7]  # identical boxes: every extremum ties
    a, b = a.to(dtype), b.to(dtype)
    grad_out = torch.randn(200, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    if reduction != "none":
        grad_out = grad_out[:1].reshape(())
    _, g1, g2 = _with_grads(_fn(name), a, b, grad_out, reduction=reduction)
    if oracle == "torchvision":
        _, e1, e2 = _with_grads(lambda x, y, **k: call(name, oracle, x, y, **k), a, b, grad_out, reduction=reduction)
    else:
        fn = lambda x, y, **k: call(name, oracle, x, y, **k)  # noqa: E731
        _, e1, e2 = _with_grads(fn, a.double(), b.double(), grad_out, reduction=reduction)
        e1, e2 = e1.to(dtype), e2.to(dtype)
    assert g1.dtype == dtype and g2.dtype == dtype
    tol = _grad_tol(dtype, (e1, e2))
    torch.testing.assert_close(g1, e1, **tol)
    torch.testing.assert_close(g2, e2, **tol)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_of_degenerate_boxes_match_torchvision(name):
    if "torchvision" not in oracles(name):
        pytest.skip("torchvision is not installed: its degenerate-box gradients are the oracle here")
    a, b = _pairs(4, 20, adversarial=True)
    grad_out = torch.rand(a.shape[0], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for first, second in ((a, b), (b, a)):
        _, g1, g2 = _with_grads(_fn(name), first, second, grad_out)
        _, e1, e2 = _with_grads(lambda x, y: call(name, "torchvision", x, y), first, second, grad_out)
        torch.testing.assert_close(g1, e1, rtol=1e-9, atol=1e-12, equal_nan=True)
        torch.testing.assert_close(g2, e2, rtol=1e-9, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["generalized_box_iou_loss", "distance_box_iou_loss"])
def test_gradcheck_float64(name, reduction):
    a, b = _pairs(6, 6)
    assert torch.autograd.gradcheck(
        lambda x, y: _fn(name)(x, y, reduction=reduction), (a.requires_grad_(), b.requires_grad_())
    )


@pytest.mark.parametrize("name", NAMES)
def test_eps(name):
    a, b = _pairs(7, 50, adversarial=True)
    oracle = "torchvision" if "torchvision" in oracles(name) else "reference"
    for eps in (1e-7, 0.5, 100.0):
        got = _fn(name)(a, b, eps=eps)
        torch.testing.assert_close(got, call(name, oracle, a, b, eps=eps), rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_integers_and_broadcasting(name):
    """[4] and [B, N, 4] boxes, integer boxes (converted to float32) and broadcast sets."""
    oracle = "torchvision" if "torchvision" in oracles(name) else "reference"
    a, b = _pairs(8, 24)
    cases = [
        (a[0], b[0]),
        (a.reshape(2, 12, 4), b.reshape(2, 12, 4)),
        (a.round().long(), b.round().int()),
        (a[:1], b),
        (a.reshape(2, 12, 4), b[:12]),
    ]
    for x, y in cases:
        for reduction in REDUCTIONS:
            if not x.is_floating_point():
                got = _fn(name)(x, y, reduction=reduction)
                assert got.dtype == torch.float32
                expected = call(name, oracle, *torch.broadcast_tensors(x, y), reduction=reduction)
                torch.testing.assert_close(got, expected.to(got.dtype), rtol=1e-5, atol=1e-5)
                continue
            got, g1, g2 = _with_grads(_fn(name), x, y, reduction=reduction)

            # torchvision's masked intersection fails when boxes1 is the smaller of a broadcast
            # pair: the oracle gets the boxes broadcast (expanded, so gradients sum back).
            def oracle_fn(p, q, **k):
                return call(name, oracle, *torch.broadcast_tensors(p, q), **k)

            exp, e1, e2 = _with_grads(oracle_fn, x, y, reduction=reduction)
            torch.testing.assert_close(got, exp, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(g1, e1, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(g2, e2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("name", NAMES)
def test_empty(name, dtype):
    a = torch.zeros(0, 4, dtype=dtype)
    for reduction, shape in (("none", (0,)), ("mean", ()), ("sum", ())):
        out, g1, g2 = _with_grads(_fn(name), a, a.clone(), reduction=reduction)
        assert out.shape == shape and out.dtype == (torch.float32 if dtype in NARROW else dtype)
        if reduction != "none":
            assert out.item() == 0.0  # torchvision: the sum of nothing, and 0 * that for the mean
        assert g1.shape == (0, 4) and g2.shape == (0, 4)


@pytest.mark.parametrize("name", NAMES)
def test_reductions_are_bitwise_repeatable_across_threads(name):
    a, b = (t.float() for t in _pairs(9, 20000))
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append([_with_grads(_fn(name), a, b, reduction=r) for r in ("mean", "sum")])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for x, y in zip(results[0], other):
            for s, t in zip(x, y):
                assert torch.equal(s, t)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_names_the_argument(name):
    a, b = torch.rand(3, 4), torch.rand(3, 4)
    cases = [
        ((torch.rand(3, 5), torch.rand(3, 5)), r"boxes1 must have shape \[\.\.\., 4\]"),
        ((a, b.double()), "boxes1 and boxes2 must have the same dtype"),
        ((a, b.to("meta")), "boxes1 and boxes2 must be on the same device"),
        ((a, b, "mea"), "reduction must be 'none', 'mean' or 'sum', got 'mea'"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match=message):
            _fn(name)(*args)
    op = getattr(ops, name)
    with pytest.raises(RuntimeError, match=r"boxes2 must have the shape of boxes1 \[3, 4\]"):
        op(a, torch.rand(2, 4))
    with pytest.raises(RuntimeError, match="boxes1 must be a floating-point tensor"):
        op(a.int(), b.int())


@pytest.mark.parametrize("name", NAMES)
def test_backward_op_checks_grad(name):
    backward = getattr(ops, f"_{name}_backward")
    a, b = torch.rand(3, 4), torch.rand(3, 4)
    with pytest.raises(RuntimeError, match="grad must have the shape of boxes1 without its last dimension"):
        backward(torch.rand(4), a, b, "none", 1e-7)
    with pytest.raises(RuntimeError, match="grad must be a 0-dim tensor"):
        backward(torch.rand(3), a, b, "mean", 1e-7)
    with pytest.raises(RuntimeError, match="grad must have dtype float32"):
        backward(torch.rand(3, dtype=torch.float64), a, b, "none", 1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_traced_bad_calls_raise_like_native(name):
    op = getattr(ops, name).default
    assert "boxes2" in assert_traced_raises_like_native(op, (torch.rand(3, 4), torch.rand(2, 4)))
    assert "reduction" in assert_traced_raises_like_native(op, (torch.rand(3, 4), torch.rand(3, 4), "max"))


@pytest.mark.parametrize("name", NAMES)
def test_double_backward_is_refused(name):
    a, b = _pairs(12, 4)
    a = a.requires_grad_()
    (g,) = torch.autograd.grad(_fn(name)(a, b, reduction="sum"), a, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        g.sum().backward()


# ----------------------------------------------------------------------------- machinery


@pytest.mark.parametrize("n", [0, 1, 70])
@pytest.mark.parametrize("device", devices())
def test_opcheck(device, n):
    a, b = _pairs(13, n)
    a, b = a.to(device).requires_grad_(), b.to(device).requires_grad_()
    for name in NAMES:
        op = getattr(ops, name).default
        assert_opcheck(op, (a, b))
        assert_opcheck(op, (a, b, "mean", 1e-7))
        assert_opcheck(op, (a, b, "sum", 0.25))
    grad = torch.rand(n, dtype=torch.float64, device=device)
    assert_opcheck(ops._complete_box_iou_loss_backward.default, (grad, a.detach(), b.detach(), "none", 1e-7))
    assert_opcheck(
        ops._generalized_box_iou_loss_backward.default, (grad[:0].sum(), a.detach(), b.detach(), "sum", 1e-7)
    )


@pytest.mark.parametrize("device", devices())
def test_torchscript(device):
    a, b = (t.to(device) for t in _pairs(14, 6))
    for name in NAMES:
        assert_scripts(_fn(name), (a, b))
        assert_scripts(_fn(name), (a, b, "mean", 0.5))
        assert_scripts(_fn(name), (a[:1], b, "sum"))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", NAMES)
def test_compile_forward_and_backward(device, name, reduction):
    torch.compiler.reset()  # one lambda for every case: a fresh compile, not the recompile limit
    a, b = (t.float().to(device).requires_grad_() for t in _pairs(15, 9))
    assert_compiles(lambda x, y: _fn(name)(x, y, reduction=reduction) * 2, (a, b), backward=True, rtol=1e-6, atol=1e-6)


class _Loss(torch.nn.Module):
    def __init__(self, name, reduction):
        super().__init__()
        self.fn, self.reduction = _fn(name), reduction

    def forward(self, boxes1, boxes2):
        return self.fn(boxes1, boxes2, reduction=self.reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", NAMES)
def test_export_with_dynamic_sizes(name, reduction):
    a, b = (t.float() for t in _pairs(16, 9))
    more = [tuple(t.float() for t in _pairs(17, 31))]
    n = torch.export.Dim("n")
    assert_exports(_Loss(name, reduction), (a, b), dynamic_shapes=({0: n}, {0: n}), more_args=more)


@pytest.mark.parametrize("dtype", NARROW)
@pytest.mark.parametrize("name", NAMES)
def test_autocast_keeps_torchvisions_float32_result(name, dtype):
    a, b = (t.to(dtype) for t in _pairs(18, 8))
    with torch.autocast("cpu", dtype=dtype):
        got = _fn(name)(a, b)
        expected = call(name, "torchvision", a, b) if "torchvision" in oracles(name) else _fn(name)(a, b)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@requires_cuda()
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name, dtype, reduction):
    a, b = _pairs(19, 20000, adversarial=reduction == "none")
    a, b = a.to(dtype), b.to(dtype)
    cpu = _with_grads(_fn(name), a, b, reduction=reduction)
    cuda = _with_grads(_fn(name), a.cuda(), b.cuda(), reduction=reduction)
    tol = cpu_vs_cuda_tolerance(dtype, float64=1e-12, float32=1e-5)
    for what, x, y in zip(("loss", "grad boxes1", "grad boxes2"), cuda, cpu):
        assert_cuda_matches_cpu(x, y, tol, what=f"{name} {reduction} {what}")
