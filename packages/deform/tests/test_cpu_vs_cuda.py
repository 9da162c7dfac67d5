"""deform_conv2d on CUDA against the same call on the CPU: the output and all five
gradients (input, offset, weight, bias, mask), in every dtype, over the configurations the
differential tests use (groups, offset groups, stride / padding / dilation, non-square
kernels, no mask or bias, batch above 64, far-reaching offsets) and strided inputs.

Tolerance, stated as (float64, float32) = (1e-10, 1e-4) for the output and every gradient,
relative to the largest magnitude of each result (see
detops_core.testing.cpu_vs_cuda_tolerance; float16 / bfloat16 are computed in float32 on
both devices and rounded once, so they get two ulps of the narrow type on top):
- the output, the weight and bias gradients and the column gradient that the offset and
  mask gradients are built from are matrix products, which cuBLAS sums in another order
  (and splitting) than the CPU's matmul: sums of up to ~10^3 terms, a few float32 eps of
  the largest term apart;
- the input gradient is scattered with atomics on CUDA, in whatever order threads run.
Offsets lie on a 1/8 grid and are never integral (exact in every dtype, clamped to +-15
where bfloat16's 8 bits still hold them), so no tap sits on a kink of bilinear sampling
where one rounding could pick the other side and change a gradient by O(1).
"""

import pytest
import torch
from deform_reference import TENSOR_ARGS, make_case

import detops_deform
from detops_core.testing import assert_cuda_matches_cpu, cpu_vs_cuda_tolerance, float_dtypes, requires_cuda, to_device

pytestmark = requires_cuda()

TOLERANCE = (1e-10, 1e-4)  # (float64, float32)

CONFIGS = [
    ("basic", dict()),
    ("no_mask_no_bias", dict(use_mask=False, use_bias=False)),
    ("groups2_offset_groups4", dict(in_channels=8, out_channels=4, groups=2, offset_groups=4)),
    ("stride_pad_dil_mixed", dict(size=(10, 9), stride=(2, 1), padding=(2, 0), dilation=(1, 2))),
    ("kernel_3x2_dil2", dict(kernel=(3, 2), dilation=(2, 2), padding=(1, 1), size=(8, 7))),
    ("batch67", dict(batch=67, in_channels=2, out_channels=3, size=(5, 4), kernel=(2, 2), padding=(0, 1))),
    ("large_offsets", dict(offset_scale=6.0)),
    ("wide", dict(in_channels=32, out_channels=16, size=(12, 11), offset_groups=2)),
]


def _case(config, dtype, seed=0):
    args = make_case(dtype=torch.float64, seed=seed, **config)
    args["offset"] = ((args["offset"] * 4).round() / 4 + 0.125).clamp(-15.125, 15.125)
    return {k: (v.to(dtype) if torch.is_tensor(v) else v) for k, v in args.items()}


def _run(args, device):
    args = to_device(args, device)
    names = [k for k in TENSOR_ARGS if args[k] is not None]
    for k in names:
        args[k].requires_grad_()
    out = detops_deform.deform_conv2d(**args)
    g = torch.Generator().manual_seed(1)
    grad_out = torch.randn(out.shape, generator=g).to(device, out.dtype)
    return out, dict(zip(names, torch.autograd.grad(out, [args[k] for k in names], grad_out)))


def _assert_devices_agree(args, dtype):
    tol = cpu_vs_cuda_tolerance(dtype, *TOLERANCE)
    cpu_out, cpu_grads = _run(args, "cpu")
    cuda_out, cuda_grads = _run(args, "cuda")
    assert_cuda_matches_cpu(cuda_out, cpu_out, tol, "output")
    assert cuda_grads.keys() == cpu_grads.keys()
    for k in cpu_grads:
        assert_cuda_matches_cpu(cuda_grads[k], cpu_grads[k], tol, f"gradient of {k}")


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("name,config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_forward_and_gradients(name, config, dtype):
    _assert_devices_agree(_case(config, dtype), dtype)


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_non_contiguous_arguments(layout, dtype):
    args = _case(dict(in_channels=8, offset_groups=2), dtype, seed=3)
    for k in ("input", "offset", "mask"):
        if layout == "channels_last":
            args[k] = args[k].to(memory_format=torch.channels_last)
        else:
            args[k] = args[k].transpose(2, 3).contiguous().transpose(2, 3)
    args["weight"] = args["weight"].transpose(0, 1).contiguous().transpose(0, 1)
    _assert_devices_agree(args, dtype)


@pytest.mark.parametrize("dtype", float_dtypes())
def test_non_finite_offsets(dtype):
    """NaN and infinite offsets sample zero with zero gradient on both devices."""
    args = _case(dict(offset_groups=2), dtype, seed=7)
    args["offset"][0, 3, 1, 2] = float("nan")
    args["offset"][1, 10, 4, 0] = float("inf")
    args["offset"][1, 21, 2, 5] = -float("inf")
    _assert_devices_agree(args, dtype)


@pytest.mark.parametrize("dtype", float_dtypes())
def test_module(dtype):
    torch.manual_seed(4)
    module = detops_deform.DeformConv2d(4, 6, 3, padding=1)
    args = _case(dict(), dtype, seed=4)
    results = []
    for device in ("cpu", "cuda"):
        m = module.to(device, dtype)
        x, offset, mask = to_device([args["input"], args["offset"], args["mask"]], device)
        out = m(x, offset, mask)
        out.sum().backward()
        results.append((out, m.weight.grad.clone(), m.bias.grad.clone()))
        m.zero_grad()
    tol = cpu_vs_cuda_tolerance(dtype, *TOLERANCE)
    for what, cuda, cpu in zip(("output", "weight gradient", "bias gradient"), results[1], results[0]):
        assert_cuda_matches_cpu(cuda, cpu, tol, what)
