"""deform_conv2d forward and all five gradients against the oracles (the pure-PyTorch
reference always, torchvision 0.29.1 when installed)."""

import os
import subprocess
import sys

import pytest
import torch
from deform_reference import CONFIGS as SHARED_CONFIGS
from deform_reference import TENSOR_ARGS, make_case
from hypothesis import given, settings
from hypothesis import strategies as st

import detops_deform
from detops_core.testing import call, devices, oracles, to_device

ORACLES = oracles("deform_conv2d")

# Batch above 64 on top of the shared configurations.
CONFIGS = [
    *SHARED_CONFIGS,
    ("batch67", dict(batch=67, in_channels=2, out_channels=3, size=(5, 4), kernel=(2, 2), padding=(0, 1))),
]


def _grads(impl, args, grad_out_seed=1):
    """`impl`'s output and the gradients of every tensor argument (a fixed random grad_out)."""
    args = {k: (v.detach().clone().requires_grad_() if torch.is_tensor(v) else v) for k, v in args.items()}
    out = call("deform_conv2d", impl, **args)
    g = torch.Generator().manual_seed(grad_out_seed)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.device, out.dtype)
    names = [k for k in TENSOR_ARGS if args[k] is not None]
    grads = torch.autograd.grad(out, [args[k] for k in names], grad_out)
    return out, dict(zip(names, grads))


def _assert_close(actual, expected, what, dtype):
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    torch.testing.assert_close(actual, expected, **tol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("oracle", ORACLES)
@pytest.mark.parametrize("name,config", CONFIGS, ids=[c[0] for c in CONFIGS])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("device", devices())
def test_forward_and_gradients(oracle, name, config, dtype, device):
    # Both oracles run on the device: the reference is vectorised torch code.
    args = to_device(make_case(dtype=dtype, **config), device)
    out, grads = _grads("detops", args)
    ref_out, ref_grads = _grads(oracle, args)
    assert out.shape == ref_out.shape and out.dtype == dtype and out.device == args["input"].device
    _assert_close(out, ref_out, f"{name} output", dtype)
    assert grads.keys() == ref_grads.keys()
    for k in grads:
        _assert_close(grads[k], ref_grads[k], f"{name} grad {k}", dtype)


@st.composite
def _configs(draw):
    groups = draw(st.sampled_from([1, 2]))
    offset_groups = draw(st.sampled_from([1, 2]))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    span = [dilation[i] * (kernel[i] - 1) + 1 for i in range(2)]
    size = tuple(draw(st.integers(max(1, span[i] - 2 * padding[i]), span[i] + 5)) for i in range(2))
    return dict(
        batch=draw(st.integers(1, 3)),
        in_channels=2 * draw(st.integers(1, 2)),
        out_channels=groups * draw(st.integers(1, 3)),
        size=size,
        kernel=kernel,
        groups=groups,
        offset_groups=offset_groups,
        stride=stride,
        padding=padding,
        dilation=dilation,
        use_mask=draw(st.booleans()),
        use_bias=draw(st.booleans()),
        offset_scale=draw(st.sampled_from([0.5, 2.0, 6.0])),
        seed=draw(st.integers(0, 2**16)),
    )


@pytest.mark.parametrize("device", devices())
@settings(max_examples=25, deadline=None)
@given(config=_configs())
def test_random_configurations(device, config):
    args = to_device(make_case(dtype=torch.float64, **config), device)
    out, grads = _grads("detops", args)
    for oracle in ORACLES:
        ref_out, ref_grads = _grads(oracle, args)
        _assert_close(out, ref_out, f"{oracle} output", torch.float64)
        for k in grads:
            _assert_close(grads[k], ref_grads[k], f"{oracle} grad {k}", torch.float64)


@pytest.mark.parametrize(
    "config",
    [
        dict(),
        dict(groups=2, in_channels=4, out_channels=4, stride=(2, 1), padding=(0, 2), dilation=(2, 1)),
        dict(kernel=(2, 3), groups=4, in_channels=8, out_channels=4, size=(6, 9)),
    ],
)
@pytest.mark.parametrize("device", devices())
def test_zero_offsets_unit_mask_equal_conv2d(config, device):
    args = to_device(make_case(dtype=torch.float64, **config), device)
    args["offset"] = torch.zeros_like(args["offset"])
    args["mask"] = torch.ones_like(args["mask"])
    groups = args["input"].shape[1] // args["weight"].shape[1]
    expected = torch.nn.functional.conv2d(
        args["input"], args["weight"], args["bias"], args["stride"], args["padding"], args["dilation"], groups
    )
    torch.testing.assert_close(detops_deform.deform_conv2d(**args), expected, rtol=1e-12, atol=1e-12)
    args["mask"] = None
    torch.testing.assert_close(detops_deform.deform_conv2d(**args), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("use_mask", [True, False])
@pytest.mark.parametrize("device", devices())
def test_gradcheck_float64(use_mask, device):
    args = make_case(batch=2, in_channels=2, out_channels=2, size=(5, 4), use_mask=use_mask, offset_scale=1.5, seed=3)
    # Keep sampling positions away from integer coordinates, where bilinear sampling has kinks.
    args["offset"] = args["offset"].round() + 0.3
    args = to_device(args, device)
    names = [k for k in TENSOR_ARGS if args[k] is not None]

    def fn(*tensors):
        kw = dict(args)
        kw.update(zip(names, tensors))
        return detops_deform.deform_conv2d(**kw)

    inputs = tuple(args[k].clone().requires_grad_() for k in names)
    # gradcheck runs the backward twice and wants identical results: the CPU backward is
    # bitwise repeatable; CUDA scatters the input gradient with atomics in any order.
    nondet_tol = 0.0 if device == "cpu" else 1e-12
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, nondet_tol=nondet_tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("device", devices())
def test_narrow_dtypes_accumulate_in_float32(dtype, device):
    args = make_case(dtype=dtype, in_channels=16, out_channels=8, size=(9, 9), seed=5)
    # Offsets on a 1/4 grid shifted by 1/8: exact in float16/bfloat16 and never integral, so
    # no tap lands on a kink of bilinear sampling (where rounding could pick the other side).
    args["offset"] = ((args["offset"].double() * 4).round() / 4 + 0.125).to(dtype)
    args = to_device(args, device)
    out, grads = _grads("detops", args)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads.values())
    wide = {k: (v.double() if torch.is_tensor(v) else v) for k, v in args.items()}
    ref_out, ref_grads = _grads("reference", wide)
    tol = dict(rtol=2e-2, atol=5e-2) if dtype == torch.float16 else dict(rtol=5e-2, atol=2e-1)
    torch.testing.assert_close(out.double(), ref_out, **tol)
    for k in grads:
        scale = ref_grads[k].abs().max().item()
        torch.testing.assert_close(grads[k].double() / scale, ref_grads[k] / scale, **tol)


@pytest.mark.parametrize(
    "wanted",
    [("input",), ("offset",), ("mask",), ("weight",), ("bias",), ("input", "weight"), ("offset", "mask", "bias")],
)
@pytest.mark.parametrize("device", devices())
def test_only_requested_gradients(wanted, device):
    """With only some arguments requiring grad, the backward skips the others and the
    requested gradients equal those of the full backward."""
    args = to_device(make_case(offset_groups=2, seed=11), device)
    _, full = _grads("detops", args)
    partial = {
        k: (v.detach().clone().requires_grad_(k in wanted) if torch.is_tensor(v) else v) for k, v in args.items()
    }
    out = detops_deform.deform_conv2d(**partial)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
    grads = torch.autograd.grad(out, [partial[k] for k in wanted], grad_out)
    # Bitwise on the CPU; CUDA's atomics add the input gradient in any order.
    tol = 0.0 if device == "cpu" else 1e-12
    for k, g in zip(wanted, grads):
        torch.testing.assert_close(g, full[k], rtol=tol, atol=tol)


@pytest.mark.parametrize("device", devices())
def test_backward_op_returns_zeros_for_unrequested_gradients(device):
    args = to_device(make_case(), device)
    grad = torch.ones(2, 6, 7, 6, dtype=torch.float64, device=device)
    s, p, d = args["stride"], args["padding"], args["dilation"]
    fixed = (grad, args["input"], args["offset"], args["weight"], args["mask"], s[0], s[1], p[0], p[1], d[0], d[1])
    gi, go, gw, gm, gb = torch.ops.detops._deform_conv2d_backward(*fixed, False, False, False)
    for g, like in ((gi, args["input"]), (go, args["offset"]), (gw, args["weight"]), (gm, args["mask"])):
        assert g.shape == like.shape and not g.any()
    torch.testing.assert_close(gb, grad.sum((0, 2, 3)))


# CPU only, by design: the CUDA backward scatters the input gradient with atomics. The
# input, offset and mask gradients come from detops' own loops (one writer per element):
# bitwise equal at any thread count. The weight and bias gradients are torch's matrix
# product and sum, whose summation split may depend on the thread count (MKL on an
# AVX-512/AMX Xeon differs in the last bits between 1 and 2 threads): bitwise repeatable
# at a fixed thread count, and within float32 rounding across thread counts.
def test_cpu_backward_is_bitwise_repeatable():
    args = make_case(
        dtype=torch.float32, batch=3, in_channels=8, out_channels=8, size=(12, 11), offset_groups=2, seed=7
    )
    threads = torch.get_num_threads()
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            first = _grads("detops", args)
            again = _grads("detops", args)
            assert torch.equal(first[0], again[0])
            for k in first[1]:
                assert torch.equal(first[1][k], again[1][k]), f"{k} at {n} threads"
            if n == 1:
                one_thread = first
        for k in first[1]:
            if k in ("weight", "bias"):
                torch.testing.assert_close(first[1][k], one_thread[1][k], rtol=1e-5, atol=1e-5)
            else:
                assert torch.equal(first[1][k], one_thread[1][k]), f"{k}: 1 thread vs {n}"
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("device", devices())
def test_empty_batch(device):
    args = to_device(make_case(batch=0), device)
    out = detops_deform.deform_conv2d(**args)
    assert out.shape == (0, 6, 7, 6) and out.device == args["input"].device
    args = {k: (v.requires_grad_() if torch.is_tensor(v) else v) for k, v in args.items()}
    detops_deform.deform_conv2d(**args).sum().backward()
    assert torch.equal(args["weight"].grad, torch.zeros_like(args["weight"]))


_CHUNKED = r"""
import sys, torch
sys.path.insert(0, sys.argv[1])
from deform_reference import make_case
import detops_deform
device = sys.argv[3]
args = make_case(dtype=torch.float64, batch=70, in_channels=4, out_channels=4, size=(6, 5), offset_groups=2)
args = {k: (v.to(device).requires_grad_() if torch.is_tensor(v) else v) for k, v in args.items()}
out = detops_deform.deform_conv2d(**args)
# An incoming gradient of exact values (multiples of 1/8), not cos(arange): the processes
# compare bits, and torch 2.13.0's first float64 cos in a process is sometimes off by up to
# 7e-9 (8 of 30 processes here), which made this test fail now and then.
grad = (torch.arange(out.numel(), dtype=out.dtype, device=device) % 13 - 6) / 8
out.backward(grad.reshape(out.shape))
results = [out.detach()] + [args[k].grad for k in ("input", "offset", "weight", "bias", "mask")]
torch.save([r.cpu() for r in results], sys.argv[2])
"""


@pytest.mark.parametrize("device", devices())
def test_chunking_matches_single_chunk(tmp_path, device):
    """Column budgets that split batch 70 into chunks of whole images, into slices of one
    image, or into single positions give the results of one chunk holding everything."""
    here = os.path.dirname(os.path.abspath(__file__))
    results = {}
    per_image = 4 * 9 * 30 * 8  # in_channels * taps * positions * sizeof(float64)
    for budget in (str(1 << 30), str(3 * per_image), str(per_image // 2), "1"):
        path = tmp_path / f"r{budget}.pt"
        env = dict(os.environ, DETOPS_DEFORM_COLUMN_BYTES=budget)
        subprocess.run([sys.executable, "-c", _CHUNKED, here, str(path), device], check=True, env=env)
        results[budget] = torch.load(path)
    (_, single), *others = results.items()
    names = ("output", "grad input", "grad offset", "grad weight", "grad bias", "grad mask")
    for budget, chunked in others:
        for name, a, b in zip(names, single, chunked):
            torch.testing.assert_close(
                a,
                b,
                rtol=1e-12,
                atol=1e-12,
                msg=lambda m, name=name, budget=budget: f"{name}, column budget {budget} bytes: {m}",
            )
