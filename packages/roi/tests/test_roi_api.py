"""gradcheck, opcheck, TorchScript, torch.compile / torch.export, modules, edge cases and
repeatability of the RoI ops."""

import pytest
import roi_reference
import torch
from roi_cases import MODULES, OPS, box_list, channels, make_rois, op_args, options

import detops_roi
from detops_core.testing import (
    assert_autocast_float32,
    assert_compiles,
    assert_exports,
    assert_opcheck,
    assert_scripts,
    call,
    devices,
    oracles,
    torchvision_ops,
)

H, W = 9, 10


def _inputs(op, dtype=torch.float64, n=2, size=2, scale=0.5, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels(op, size), H, W, generator=g, dtype=dtype)
    rois = make_rois(n, scale, g, dtype)
    return x.to(device), rois.to(device)


def _nondet_tol(device):
    # gradcheck runs the backward twice and wants identical results: on the CPU it is
    # (one writer per gradient plane); CUDA adds with atomics in any order.
    return 0.0 if device == "cpu" else 1e-12


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device", devices())
def test_gradcheck_float64(op, device):
    x, rois = _inputs(op, n=2, seed=1, device=device)
    rois = rois[:8]
    x.requires_grad_()

    def fn(t):
        return call(op, "detops", t, rois, **options(op, 2, 0.5, -1, True))

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5, nondet_tol=_nondet_tol(device))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device", devices())
def test_opcheck(op, device):
    x, rois = _inputs(op, torch.float32, device=device)
    x.requires_grad_()
    assert_opcheck(getattr(torch.ops.detops, op).default, op_args(op, x, rois, (2, 2), 0.5, 2, True))


@pytest.mark.parametrize("device", devices())
def test_opcheck_multi_level(device):
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 3, 12, 10, generator=g), torch.randn(2, 3, 6, 5, generator=g)]
    feats = [f.to(device).requires_grad_() for f in feats]
    rois = make_rois(2, 0.5, g, torch.float32).to(device)
    levels = (torch.arange(rois.shape[0]) % 2).to(device)
    assert_opcheck(torch.ops.detops.multi_level_roi_align.default, (feats, [0.5, 0.25], rois, levels, 3, 2, 2, True))


@pytest.mark.parametrize("device", devices())
def test_double_backward_raises(device):
    x, rois = _inputs("roi_align", device=device)
    x.requires_grad_()
    out = detops_roi.roi_align(x, rois, 2, 0.5, 2, True)
    # The incoming gradient depends on x, so the backward op is differentiated.
    (g,) = torch.autograd.grad((out**2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device", devices())
def test_scripted_function_and_module(op, device):
    x, rois = _inputs(op, torch.float32, device=device)
    kw = options(op, (2, 2), 0.5, 2, True)
    order = torch.argsort(rois[:, 0], stable=True)
    expected = call(op, "detops", x, rois, **kw)
    module = MODULES[op](**kw)
    assert_scripts(module, (x, rois), expected)
    assert_scripts(module, (x, box_list(rois, 2)), expected[order])
    fn = getattr(detops_roi, op)
    assert_scripts(fn, (x, rois, *kw.values()), expected)


@pytest.mark.parametrize("oracle", oracles("roi_align"))
def test_module_repr(oracle):
    modules = [
        ("RoIAlign", (7, 0.25, 2, True)),
        ("RoIPool", ((3, 4), 1.0)),
        ("PSRoIAlign", (2, 0.5, -1)),
        ("PSRoIPool", (3, 1 / 16)),
    ]
    expected = {
        "reference": [
            "RoIAlign(output_size=7, spatial_scale=0.25, sampling_ratio=2, aligned=True)",
            "RoIPool(output_size=(3, 4), spatial_scale=1.0)",
            "PSRoIAlign(output_size=2, spatial_scale=0.5, sampling_ratio=-1)",
            "PSRoIPool(output_size=3, spatial_scale=0.0625)",
        ]
    }
    for i, (name, args) in enumerate(modules):
        ours = repr(getattr(detops_roi, name)(*args))
        theirs = repr(getattr(torchvision_ops(), name)(*args)) if oracle == "torchvision" else expected["reference"][i]
        assert ours == theirs


@pytest.mark.parametrize("device", devices())
def test_compile_fullgraph_forward_backward(device):
    x, rois = _inputs("ps_roi_align", torch.float32, size=2, device=device)

    def f(t, r):
        return (
            detops_roi.roi_align(t, r, 2, 0.5, 2, True).sum()
            + detops_roi.roi_pool(t, r, 2, 0.5).sum()
            + detops_roi.ps_roi_align(t, r, 2, 0.5, -1).sum()
            + detops_roi.ps_roi_pool(t, r, 2, 0.5).sum()
        )

    tol = dict(rtol=1.3e-6, atol=1e-5)  # torch.testing's float32 defaults: aot_eager may reorder the sums
    assert_compiles(f, (x.requires_grad_(), rois), backward=True, backend="aot_eager", **tol)


@pytest.mark.parametrize("device", devices())
def test_compile_inductor_and_export(device):
    x, rois = _inputs("roi_align", torch.float32, device=device)

    class M(torch.nn.Module):
        def forward(self, t, r):
            return detops_roi.roi_align(t, r, 3, 0.5, -1, False) * 2

    tol = dict(rtol=1.3e-6, atol=1e-5)  # torch.testing's float32 defaults: inductor may fuse the * 2
    assert_compiles(M(), (x, rois), **tol)
    assert_exports(M(), (x, rois), **tol)


@pytest.mark.parametrize("device", devices())
def test_multi_level_matches_per_level(device):
    g = torch.Generator().manual_seed(5)
    feats = [torch.randn(2, 4, 24 // s, 20 // s, generator=g, dtype=torch.float64).to(device) for s in (1, 2, 4)]
    scales = [1.0, 0.5, 0.25]
    rois = make_rois(2, 1.0, g)
    rois = torch.cat([rois, rois]).to(device)
    levels = torch.randint(0, 3, (rois.shape[0],), generator=g).to(device)
    fs = [f.clone().requires_grad_() for f in feats]
    out = detops_roi.multi_level_roi_align(fs, rois, levels, (3, 2), scales, -1, True)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64).to(device)
    grads = torch.autograd.grad(out, fs, grad)
    fs2 = [f.clone().requires_grad_() for f in feats]
    expected = torch.zeros_like(out)
    for lvl in range(3):
        idx = torch.nonzero(levels == lvl)[:, 0]
        expected[idx] = detops_roi.roi_align(fs2[lvl], rois[idx], (3, 2), scales[lvl], -1, True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    expected_grads = torch.autograd.grad(expected, fs2, grad)
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda a, b, c: detops_roi.multi_level_roi_align([a, b, c], rois[:6], levels[:6], 2, scales, 2, False),
        tuple(f[:, :2].clone().requires_grad_() for f in feats),
        nondet_tol=_nondet_tol(device),
    )


# CPU only: the CPU backward promises bitwise repeatability at any thread count; the CUDA
# backward adds with atomics in any order by design (test_cpu_vs_cuda.py bounds it).
@pytest.mark.parametrize("op", OPS)
def test_backward_bitwise_repeatable(op):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, channels(op, 3) * 4, 40, 44, generator=g)
    b = torch.rand(300, 4, generator=g) * 40
    rois = torch.cat([torch.randint(0, 2, (300, 1), generator=g).float(), b[:, :2], b[:, :2] + b[:, 2:]], dim=1)
    grads = []
    threads = torch.get_num_threads()
    try:
        for n in (threads, 1, threads):
            torch.set_num_threads(n)
            xg = x.clone().requires_grad_()
            out = call(op, "detops", xg, rois, **options(op, 3, 1.0, -1, True))
            grads.append(torch.autograd.grad(out, xg, torch.ones_like(out))[0])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device", devices())
def test_empty_rois_and_empty_maps(op, device):
    x, rois = _inputs(op, torch.float32, device=device)
    xg = x.clone().requires_grad_()
    kw = options(op, 2, 0.5, 2, True)
    out = call(op, "detops", xg, rois[:0], **kw)
    assert out.shape == (0, x.shape[1] // (4 if op.startswith("ps_") else 1), 2, 2)
    out.sum().backward()
    assert torch.equal(xg.grad, torch.zeros_like(x))
    assert call(op, "detops", x, [], **kw).shape[0] == 0
    for shape in ((2, x.shape[1], 0, W), (2, x.shape[1], H, 0)):
        e = torch.zeros(shape, device=device, requires_grad=True)
        out = call(op, "detops", e, rois, **options(op, 2, 0.5, -1, True))
        assert out.shape[0] == rois.shape[0] and torch.equal(out, torch.zeros_like(out))
        out.sum().backward()
        assert e.grad.shape == e.shape


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device", devices())
def test_non_finite_and_huge_boxes(op, device):
    x, _ = _inputs(op, torch.float32, device=device)
    nan, inf = float("nan"), float("inf")
    rois = torch.tensor(
        [
            [0, nan, 1, 5, 5],
            [1, 1, nan, nan, 5],
            [0, 1, 1, inf, 5],
            [1, -inf, -inf, inf, inf],
            [0, -1e30, -1e30, 1e30, 1e30],
            [1, -3e9, 2, 3e9, 6],
            [0, 2, 2, 8, 8],
        ],
        device=device,
    )
    for sr in (-1, 2):
        kw = options(op, 2, 0.5, sr, True)
        xg = x.clone().requires_grad_()
        out = call(op, "detops", xg, rois, **kw)
        # Non-finite boxes pool to 0; the finite ones give finite values.
        assert torch.equal(out[:4], torch.zeros_like(out[:4]))
        assert torch.isfinite(out).all()
        out.sum().backward()
        assert torch.isfinite(xg.grad).all()
        torch.testing.assert_close(out[6:], call(op, "detops", x, rois[6:], **kw))


@pytest.mark.parametrize("oracle,op", [(oracle, op) for op in ("roi_align", "ps_roi_align") for oracle in oracles(op)])
@pytest.mark.parametrize("device", devices())
def test_large_adaptive_grid(oracle, op, device):
    """Boxes several times the map with adaptive sampling: grids of dozens of samples per
    axis, where detops visits only the samples that can touch the map."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, channels(op, 1), 6, 7, generator=g, dtype=torch.float64).to(device)
    rois = torch.tensor(
        [[0, -30.0, -20.0, 40.0, 35.0], [0, -50.0, 3.0, 9.0, 4.5], [0, 2.0, -90.0, 6.0, 80.0]],
        dtype=torch.float64,
        device=device,
    )
    for aligned in (False, True):
        kw = options(op, 1, 1.0, -1, aligned)
        ours = call(op, "detops", x, rois, **kw)
        theirs = call(op, oracle, x, rois, **kw)
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("device", devices())
def test_autocast_computes_in_float32(device):
    x, rois = _inputs("roi_align", torch.float32, device=device)
    # The boxes stay float32 while the features are bfloat16: autocast must reconcile them.
    assert_autocast_float32(lambda t: detops_roi.roi_align(t, rois, 2, 0.5, 2, True), [x], device, torch.bfloat16)
    assert_autocast_float32(lambda t: torch.ops.detops.roi_pool(t, rois, 0.5, 2, 2), [x], device, torch.bfloat16)


def test_reference_sanity():
    """The reference itself against hand-computed values (one box, one bin)."""
    x = torch.arange(16.0, dtype=torch.float64).reshape(1, 1, 4, 4)
    rois = torch.tensor([[0, 0.0, 0.0, 2.0, 2.0]], dtype=torch.float64)
    # aligned=False, 1x1 output, 2x2 samples at (0.5, 0.5), (0.5, 1.5), (1.5, 0.5), (1.5, 1.5)
    assert roi_reference.roi_align(x, rois, (1, 1), 1.0, 2, False).item() == pytest.approx(5.0 * 1.0)
    assert roi_reference.roi_pool(x, rois, (1, 1), 1.0).item() == 10.0  # rows/cols 0..2 inclusive
    assert detops_roi.roi_pool(x, rois, 1, 1.0).item() == 10.0
