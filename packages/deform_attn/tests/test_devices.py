"""Every available device (CPU always, CUDA when torch sees a GPU) against the grid_sample
reference computed on the CPU in float64: forward and the three gradients, wide and
narrow dtypes."""

import pytest
import torch
from deform_attn_reference import NAMES, make_case, reference_msda

import detops_deform_attn
from detops_core.testing import devices, float_dtypes

CONFIGS = [
    dict(),
    dict(shapes=((9, 11), (5, 7), (3, 3), (1, 5), (7, 1)), points=1, heads=3, head_dim=5),
    dict(points=8, shapes=((5, 5),), spread=0.6, queries=40),
]
TOL = {
    torch.float64: dict(rtol=1e-9, atol=1e-9),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=5e-2, atol=5e-2),
}


def _run(fn, case, device, dtype):
    leaves = [case[k].to(device=device, dtype=dtype if case[k].is_floating_point() else None) for k in NAMES]
    for i in (0, 2, 3):
        leaves[i].requires_grad_()
    out = fn(*leaves)
    grad = torch.cos(torch.arange(out.numel(), dtype=torch.float64)).reshape(out.shape).to(device, dtype)
    grads = torch.autograd.grad(out, [leaves[0], leaves[2], leaves[3]], grad)
    return [t.detach().cpu().double() for t in (out, *grads)]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("config", CONFIGS)
def test_device_against_reference(device, dtype, config):
    case = make_case(dtype=torch.float64, **config)
    # Inputs rounded to the dtype first, so both sides see the same numbers.
    case = {k: (v.to(dtype).double() if v.is_floating_point() else v) for k, v in case.items()}
    got = _run(detops_deform_attn.multi_scale_deformable_attention, case, device, dtype)
    expected = _run(reference_msda, case, "cpu", torch.float64)
    for name, a, e in zip(("output", "grad value", "grad locations", "grad weights"), got, expected):
        scale = max(1.0, e.abs().max().item())
        torch.testing.assert_close(a / scale, e / scale, **TOL[dtype], msg=lambda m, name=name: f"{name}: {m}")
