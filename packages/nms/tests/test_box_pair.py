"""Pairwise generalized_box_iou, distance_box_iou and complete_box_iou (native ops and their
native backward ops) against torchvision 0.29.1 (and box_pair_reference.py where torchvision
is missing): values and gradients in every float dtype, empty sets, ties, degenerate, NaN,
infinite and huge boxes; float64 gradcheck; bitwise repeatable gradients; bad input; and the
ops inside PyTorch's machinery (opcheck, TorchScript, torch.compile, torch.export, autocast).

complete_box_iou is not gradchecked: like torchvision's, its gradient treats alpha as a
constant (computed under no_grad), so it is not the numerical derivative; its gradient is
compared with torchvision's autograd in float64 instead, tightly.
"""

import pytest
import torch
from box_pair_reference import (
    adversarial_boxes,
    clamp_passes_gradient_at_zero,
    random_boxes,
    reference_complete_box_iou,
    reference_distance_box_iou,
    reference_generalized_box_iou,
)

import detops_nms
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
NAMES = ["generalized_box_iou", "distance_box_iou", "complete_box_iou"]
register_op("generalized_box_iou", detops_nms.generalized_box_iou, reference_generalized_box_iou)
register_op("distance_box_iou", detops_nms.distance_box_iou, reference_distance_box_iou)
register_op("complete_box_iou", detops_nms.complete_box_iou, reference_complete_box_iou)
ORACLE_CASES = [(n, o) for n in NAMES for o in oracles(n)]
NARROW = (torch.float16, torch.bfloat16)


def _fn(name):
    return getattr(detops_nms, name)


def _sets(seed, n=37, m=23, integer=False):
    g = torch.Generator().manual_seed(seed)
    return random_boxes(n, g, integer=integer), random_boxes(m, g, integer=integer)


def _with_grads(fn, a, b, grad_out, **kwargs):
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    out = fn(a, b, **kwargs)
    out.backward(grad_out.to(out.dtype))
    return out.detach(), a.grad, b.grad


def _grad_tol(dtype, grads):
    scale = max(float(g.abs().max()) for g in grads) if all(g.numel() for g in grads) else 1.0
    rtol = {torch.float64: 1e-11, torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    return {"rtol": rtol, "atol": rtol * scale}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,oracle", ORACLE_CASES)
def test_values_match(name, oracle, dtype):
    a, b = _sets(1)
    extra = adversarial_boxes()
    a, b = torch.cat((a, extra)).to(dtype), torch.cat((extra, b)).to(dtype)
    got = _fn(name)(a, b)
    expected = call(name, oracle, a, b)
    if oracle == "reference" and dtype != torch.float64:
        expected = expected.to(got.dtype)  # the reference computes in float64
    want_dtype = torch.float32 if dtype in NARROW else dtype
    assert got.dtype == want_dtype and got.shape == (a.shape[0], b.shape[0])
    if oracle == "torchvision" and name != "complete_box_iou":
        # The same operations in the same order: equal to the bit (NaN where NaN).
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
    else:
        # complete_box_iou: the C library's atan and torch's vectorised one may differ in the
        # last place; the reference computes in float64.
        tol = 1e-12 if dtype == torch.float64 else (1e-5 if oracle == "torchvision" else 2e-2)
        finite = torch.isfinite(expected) & torch.isfinite(got)
        torch.testing.assert_close(got[finite], expected[finite], rtol=tol, atol=tol)
        if oracle == "torchvision" or dtype == torch.float64:  # float64 does not overflow where T does
            assert torch.equal(torch.isnan(got), torch.isnan(expected))


@pytest.mark.parametrize("integer", [False, True], ids=["random", "ties"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,oracle", ORACLE_CASES)
def test_gradients_match(name, oracle, dtype, integer):
    if integer and oracle == "torchvision" and clamp_passes_gradient_at_zero():
        pytest.skip(
            f"torch {torch.__version__} passes clamp(min=0)'s gradient at 0, so this torchvision's gradients at ties "
            "differ from torchvision 0.29.1 on torch 2.14 (detops' contract); the reference checks the ties here"
        )
    a, b = _sets(2, integer=integer)
    a[5] = b[3]  # identical boxes: every extremum ties
    a, b = a.to(dtype), b.to(dtype)
    grad_out = torch.randn(a.shape[0], b.shape[0], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out, g1, g2 = _with_grads(_fn(name), a, b, grad_out)
    if oracle == "torchvision":
        _, e1, e2 = _with_grads(lambda x, y: call(name, oracle, x, y), a, b, grad_out)
    else:  # the float64 reference on the same values
        _, e1, e2 = _with_grads(lambda x, y: call(name, oracle, x, y), a.double(), b.double(), grad_out)
        e1, e2 = e1.to(dtype), e2.to(dtype)
    assert g1.dtype == dtype and g2.dtype == dtype
    tol = _grad_tol(dtype, (e1, e2))
    torch.testing.assert_close(g1, e1, **tol)
    torch.testing.assert_close(g2, e2, **tol)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_of_degenerate_boxes_match_torchvision(name):
    """Touching, nested, empty, inverted boxes and NaN / infinite coordinates in float64:
    the same gradients as torchvision's autograd, NaN where it has NaN."""
    if "torchvision" not in oracles(name):
        pytest.skip("torchvision is not installed: its degenerate-box gradients are the oracle here")
    extra = adversarial_boxes()
    a, b = _sets(4, 9, 7)
    a, b = torch.cat((a, extra)), torch.cat((extra, b))
    grad_out = torch.rand(a.shape[0], b.shape[0], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    _, g1, g2 = _with_grads(_fn(name), a, b, grad_out)
    _, e1, e2 = _with_grads(lambda x, y: call(name, "torchvision", x, y), a, b, grad_out)
    torch.testing.assert_close(g1, e1, rtol=1e-9, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(g2, e2, rtol=1e-9, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("name", ["generalized_box_iou", "distance_box_iou"])
def test_gradcheck_float64(name):
    a, b = _sets(6, 5, 4)
    a, b = a.requires_grad_(), b.requires_grad_()
    assert torch.autograd.gradcheck(_fn(name), (a, b))


def test_eps_is_used():
    a, b = _sets(7, 6, 5)
    for name in ("distance_box_iou", "complete_box_iou"):
        for eps in (1e-7, 0.5, 100.0):
            if "torchvision" in oracles(name):
                expected = call(name, "torchvision", a, b, eps=eps)
            else:
                expected = call(name, "reference", a, b, eps=eps)
            torch.testing.assert_close(_fn(name)(a, b, eps=eps), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("name", NAMES)
def test_empty(name, shape, dtype):
    g = torch.Generator().manual_seed(8)
    a, b = random_boxes(shape[0], g).to(dtype), random_boxes(shape[1], g).to(dtype)
    out, g1, g2 = _with_grads(_fn(name), a, b, torch.ones(shape))
    assert out.shape == shape and out.dtype == (torch.float32 if dtype in NARROW else dtype)
    assert torch.equal(g1, torch.zeros_like(a)) and torch.equal(g2, torch.zeros_like(b))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_are_bitwise_repeatable_across_threads(name):
    a, b = _sets(9, 300, 150)  # several row blocks
    a, b = a.float(), b.float()
    grad_out = torch.randn(300, 150, generator=torch.Generator().manual_seed(10))
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(_with_grads(_fn(name), a, b, grad_out))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for x, y in zip(results[0], other):
            assert torch.equal(x, y)


@pytest.mark.parametrize("name", NAMES)
def test_leading_batch_dimensions_broadcast(name):
    """[..., N, 4] with [..., M, 4] (leading dimensions broadcast, as torchvision's): one
    native call per batch element, values and gradients as torchvision's (or the reference
    per batch element)."""
    g = torch.Generator().manual_seed(21)
    boxes = random_boxes(2 * 3 * 5 + 3 * 4, g)
    a, b = boxes[:30].reshape(2, 3, 5, 4), boxes[30:].reshape(3, 4, 4)
    grad_out = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    for x, y, gy in ((a, b, grad_out), (a[0], b, grad_out[0]), (a[0, 0], b, grad_out[0])):
        out, g1, g2 = _with_grads(_fn(name), x, y, gy)
        if "torchvision" in oracles(name):
            expected, e1, e2 = _with_grads(lambda p, q: call(name, "torchvision", p, q), x, y, gy)
        else:

            def per_element(p, q):
                lead = torch.broadcast_tensors(p[..., :1, 0], q[..., :1, 0])[0].shape[:-1]
                pb = p.expand(*lead, *p.shape[-2:]).reshape(-1, *p.shape[-2:])
                qb = q.expand(*lead, *q.shape[-2:]).reshape(-1, *q.shape[-2:])
                rows = [call(name, "reference", pb[i], qb[i]) for i in range(pb.shape[0])]
                return torch.stack(rows).reshape(*lead, p.shape[-2], q.shape[-2])

            expected, e1, e2 = _with_grads(per_element, x, y, gy)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g1, e1, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g2, e2, rtol=1e-10, atol=1e-12)
    empty = _fn(name)(a[:0].half(), b.half())
    assert empty.shape == (0, 3, 5, 4) and empty.dtype == torch.float32
    assert_scripts(_fn(name), (a, b))


def test_non_contiguous_boxes():
    a, b = _sets(11, 12, 9)
    wide = torch.zeros(12, 9, dtype=torch.float64)
    wide[:, 1:9:2] = a
    strided = wide[:, 1:9:2]
    assert not strided.is_contiguous()
    for name in NAMES:
        assert torch.equal(_fn(name)(strided, b), _fn(name)(a, b))


# ----------------------------------------------------------------------------- bad input


def _bad_calls():
    a, b = torch.rand(3, 4), torch.rand(2, 4)
    return [
        ((torch.rand(4), b), "boxes1 must be a 2-D tensor of shape [N, 4]"),
        ((a, torch.rand(2, 5)), "boxes2 must be a 2-D tensor of shape [M, 4]"),
        ((a.int(), b.int()), "boxes1 must be a floating-point tensor"),
        ((a, b.double()), "boxes1 and boxes2 must have the same dtype"),
        ((a, b.to("meta")), "boxes1 and boxes2 must be on the same device"),
    ]


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_names_the_argument(name):
    for args, message in _bad_calls():
        with pytest.raises(RuntimeError, match=message.replace("[", r"\[").replace("]", r"\]")):
            _fn(name)(*args)


@pytest.mark.parametrize("name", NAMES)
def test_backward_op_checks_grad(name):
    backward = getattr(ops, f"_{name}_backward")
    extra = () if name == "generalized_box_iou" else (1e-7,)
    a, b = torch.rand(3, 4), torch.rand(2, 4)
    with pytest.raises(RuntimeError, match=r"grad must have shape \[3, 2\]"):
        backward(torch.rand(2, 3), a, b, *extra)
    with pytest.raises(RuntimeError, match="grad must have dtype float32"):
        backward(torch.rand(3, 2, dtype=torch.float64), a, b, *extra)
    with pytest.raises(RuntimeError, match="grad must have dtype float32"):
        backward(torch.rand(3, 2).half(), a.half(), b.half(), *extra)


@pytest.mark.parametrize("name", NAMES)
def test_traced_bad_calls_raise_like_native(name):
    op = getattr(ops, name).default
    assert "boxes2" in assert_traced_raises_like_native(op, (torch.rand(3, 4), torch.rand(2, 3)))
    assert "dtype" in assert_traced_raises_like_native(op, (torch.rand(3, 4), torch.rand(2, 4).double()))


@pytest.mark.parametrize("name", NAMES)
def test_double_backward_is_refused(name):
    a, b = _sets(12, 4, 3)
    a = a.requires_grad_()
    (g,) = torch.autograd.grad(_fn(name)(a, b).sum(), a, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        g.sum().backward()


# ----------------------------------------------------------------------------- machinery


@pytest.mark.parametrize("n", [0, 1, 70])
@pytest.mark.parametrize("device", devices())
def test_opcheck(device, n):
    a, b = _sets(13, n, 5)
    a, b = a.to(device).requires_grad_(), b.to(device).requires_grad_()
    assert_opcheck(ops.generalized_box_iou.default, (a, b))
    assert_opcheck(ops.distance_box_iou.default, (a, b, 1e-7))
    assert_opcheck(ops.complete_box_iou.default, (a, b, 0.25))
    grad = torch.rand(n, 5, dtype=torch.float64, device=device)
    assert_opcheck(ops._generalized_box_iou_backward.default, (grad, a.detach(), b.detach()))
    assert_opcheck(ops._complete_box_iou_backward.default, (grad, a.detach(), b.detach(), 1e-7))


@pytest.mark.parametrize("device", devices())
def test_torchscript(device):
    a, b = (t.to(device) for t in _sets(14, 6, 4))
    for name in NAMES:
        assert_scripts(_fn(name), (a, b))
    assert_scripts(detops_nms.distance_box_iou, (a, b, 0.5))
    assert_scripts(detops_nms.complete_box_iou, (a, b, 0.5))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", NAMES)
def test_compile_forward_and_backward(device, name):
    a, b = (t.float().to(device).requires_grad_() for t in _sets(15, 9, 6))
    # Inductor fuses the surrounding arithmetic in its own order: a few ulps of float32.
    assert_compiles(lambda x, y: _fn(name)(x, y) * 2, (a, b), backward=True, rtol=1e-6, atol=1e-6)


class _Pairwise(torch.nn.Module):
    def __init__(self, name):
        super().__init__()
        self.fn = _fn(name)

    def forward(self, boxes1, boxes2):
        return self.fn(boxes1, boxes2)


@pytest.mark.parametrize("name", NAMES)
def test_export_with_dynamic_sizes(name):
    a, b = (t.float() for t in _sets(16, 9, 6))
    more = [tuple(t.float() for t in _sets(17, 3, 11))]
    dims = ({0: torch.export.Dim("n")}, {0: torch.export.Dim("m")})
    assert_exports(_Pairwise(name), (a, b), dynamic_shapes=dims, more_args=more)


@pytest.mark.parametrize("dtype", NARROW)
@pytest.mark.parametrize("name", NAMES)
def test_autocast_keeps_torchvisions_float32_result(name, dtype):
    """No autocast kernel: narrow boxes compute in float32 and the float32 result stays, as
    torchvision's does under autocast (its formulas upcast; autocast leaves them alone)."""
    a, b = (t.to(dtype) for t in _sets(18, 8, 5))
    with torch.autocast("cpu", dtype=dtype):
        got = _fn(name)(a, b)
        expected = call(name, "torchvision", a, b) if "torchvision" in oracles(name) else _fn(name)(a, b)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@requires_cuda()
@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name, dtype):
    """Same per-pair math (box_pair_math.h) and the same summation order on both devices;
    CUDA's atan and fma contraction move results by a few ulps of the compute type."""
    a, b = _sets(19, 150, 70)
    extra = adversarial_boxes()
    a, b = torch.cat((a, extra)).to(dtype), torch.cat((extra, b)).to(dtype)
    grad_out = torch.randn(a.shape[0], b.shape[0], generator=torch.Generator().manual_seed(20), dtype=torch.float64)
    cpu = _with_grads(_fn(name), a, b, grad_out)
    cuda = _with_grads(_fn(name), a.cuda(), b.cuda(), grad_out.cuda())
    tol = cpu_vs_cuda_tolerance(dtype, float64=1e-12, float32=1e-5)
    for what, x, y in zip(("value", "grad boxes1", "grad boxes2"), cuda, cpu):
        assert_cuda_matches_cpu(x, y, tol, what=f"{name} {what}")
