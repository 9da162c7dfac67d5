"""multi_scale_deformable_attention on CUDA against the same call on the CPU: output and
the three gradients, every dtype, the differential tests' configurations.

Tolerance (float64, float32) = (1e-10, 1e-5), relative to each result's largest magnitude
(detops_core.testing.cpu_vs_cuda_tolerance adds two ulps for float16/bfloat16): the kernels
share their math and summation order except that nvcc may contract a * b + c into one
fused multiply-add (the CPU build forbids it) and the CUDA value gradient is summed with
atomics in any order. Locations avoid exact pixel boundaries (a 1/8-pixel grid offset by
1/16), so one rounding cannot move a sample across a kink of bilinear interpolation.
"""

import pytest
import torch
from deform_attn_reference import NAMES, make_case

import detops_deform_attn
from detops_core.testing import assert_cuda_matches_cpu, cpu_vs_cuda_tolerance, float_dtypes, requires_cuda, to_device

pytestmark = requires_cuda()

TOLERANCE = (1e-10, 1e-5)
CONFIGS = [
    ("basic", dict()),
    ("five_levels_odd", dict(shapes=((9, 11), (5, 7), (3, 3), (1, 5), (7, 1)))),
    ("eight_points_outside", dict(points=8, spread=0.6, shapes=((5, 5), (3, 2)))),
    ("wide", dict(heads=8, head_dim=32, queries=200, shapes=((16, 20), (8, 10), (4, 5), (2, 3)), points=4)),
]


def _case(config, dtype):
    case = make_case(dtype=torch.float64, **config)
    shapes = case["value_spatial_shapes"]
    size = torch.stack([shapes[:, 1], shapes[:, 0]], -1).double().view(1, 1, 1, -1, 1, 2)
    pixels = case["sampling_locations"] * size - 0.5
    case["sampling_locations"] = ((pixels * 8).round() / 8 + 1 / 16 + 0.5) / size
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in case.items()}


def _run(case, device):
    args = to_device([case[k] for k in NAMES], device)
    for i in (0, 2, 3):
        args[i].requires_grad_()
    out = detops_deform_attn.multi_scale_deformable_attention(*args)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(device, out.dtype)
    return [out, *torch.autograd.grad(out, [args[0], args[2], args[3]], grad)]


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("name,config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_cuda_matches_cpu(name, config, dtype):
    case = _case(config, dtype)
    tol = cpu_vs_cuda_tolerance(dtype, *TOLERANCE)
    for what, a, e in zip(
        ("output", "grad value", "grad locations", "grad weights"), _run(case, "cuda"), _run(case, "cpu")
    ):
        assert_cuda_matches_cpu(a, e, tol, what=f"{name} {what}")


def test_spatial_shapes_on_the_cpu_or_the_gpu():
    case = _case(dict(), torch.float32)
    args = to_device([case[k] for k in NAMES], "cuda")
    on_gpu = detops_deform_attn.multi_scale_deformable_attention(*args)
    args[1] = case["value_spatial_shapes"]
    on_cpu = detops_deform_attn.multi_scale_deformable_attention(*args)
    assert torch.equal(on_gpu, on_cpu)
    with pytest.raises(RuntimeError, match="value and sampling_locations must be on the same device"):
        detops_deform_attn.multi_scale_deformable_attention(args[0], args[1], case["sampling_locations"], args[3])
