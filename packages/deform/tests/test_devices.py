"""Every available device (CPU always, CUDA when torch sees a GPU) against the reference
computed on the CPU in float64: forward and all five gradients, wide and narrow dtypes."""

import pytest
import torch
from deform_reference import TENSOR_ARGS, make_case

from detops_core.testing import call, devices

CONFIGS = [
    dict(),
    dict(use_mask=False, use_bias=False, groups=2, offset_groups=2, in_channels=4, out_channels=4),
    dict(batch=3, kernel=(2, 3), stride=(2, 1), padding=(0, 2), dilation=(2, 1), size=(9, 7), offset_scale=5.0),
    dict(batch=66, in_channels=2, out_channels=2, size=(4, 4), kernel=(1, 1), padding=(0, 0)),
]


def _run(impl, args, device, dtype):
    moved = {
        k: (v.to(device=device, dtype=dtype).requires_grad_() if torch.is_tensor(v) else v) for k, v in args.items()
    }
    out = call("deform_conv2d", impl, **moved)
    grad_out = torch.cos(torch.arange(out.numel(), dtype=torch.float64)).reshape(out.shape)
    names = [k for k in TENSOR_ARGS if moved[k] is not None]
    grads = torch.autograd.grad(out, [moved[k] for k in names], grad_out.to(device=device, dtype=dtype))
    return out.detach().cpu().double(), {k: g.cpu().double() for k, g in zip(names, grads)}


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("config", CONFIGS)
def test_device_against_reference(device, dtype, config):
    args = make_case(dtype=torch.float64, **config)
    # Offsets on a grid exact in every dtype and never integral (no tap on a kink).
    args["offset"] = (args["offset"] * 4).round() / 4 + 0.125
    args = {k: (v.to(dtype).double() if torch.is_tensor(v) else v) for k, v in args.items()}
    out, grads = _run("detops", args, device, dtype)
    ref_out, ref_grads = _run("reference", args, "cpu", torch.float64)
    tol = {
        torch.float64: dict(rtol=1e-9, atol=1e-9),
        torch.float32: dict(rtol=1e-4, atol=1e-4),
        torch.float16: dict(rtol=2e-2, atol=5e-2),
        torch.bfloat16: dict(rtol=5e-2, atol=2e-1),
    }[dtype]
    scale = max(1.0, ref_out.abs().max().item())
    torch.testing.assert_close(out / scale, ref_out / scale, **tol)
    for k in grads:
        scale = max(1.0, ref_grads[k].abs().max().item())
        torch.testing.assert_close(grads[k] / scale, ref_grads[k] / scale, **tol, msg=lambda m, k=k: f"grad {k}: {m}")
