"""fpn_upsample_add, MultiScaleRoIAlign and FeaturePyramidNetwork on CUDA against the same
call on the CPU: forward and backward (inputs and parameters), in every dtype.

Tolerances, relative to the largest magnitude of each result:
- fpn_upsample_add: identical, forward and backward, every dtype. Both devices add one
  top element to each lateral element in acc_t and round once; the backward gathers each
  top element's window in the same row-major order (no atomics) on both.
- MultiScaleRoIAlign: (float64, float32) = (1e-12, 1e-5), plus two ulps of the narrow type
  for float16 / bfloat16 (computed in float32 and rounded once on both devices; see
  detops_core.testing.cpu_vs_cuda_tolerance). It is one multi_level_roi_align call, whose
  forward sums a bin's samples in another order on each device and whose CUDA backward
  adds with atomics (test_cpu_vs_cuda.py of detops-roi states the same figures).
- FeaturePyramidNetwork: FPN_TOLERANCE below. Its convolutions are torch's (oneDNN or
  the reference kernels on the CPU, cuDNN on CUDA, TF32 switched off: full_float32): other
  algorithms, other summation orders. float16 / bfloat16 round every layer's output to the
  narrow type, so a one-ulp difference in an intermediate map feeds the next 3x3
  convolution's ~150-term sums. Measured on the CPU against float64 on this case: 6e-7
  (float32), 9e-4 (float16), 6e-3 (bfloat16); CUDA and CPU can each be that far off, in
  opposite directions: the tolerances leave a margin of five to a hundred times that and
  still fail on a wrong or missing term, which is off by the order of the values.
"""

from collections import OrderedDict

import pytest
import torch
from fpn_reference import UPSAMPLE_SIZES, upsample_case

import detops_fpn
from detops_core.testing import (
    assert_cuda_matches_cpu,
    cpu_vs_cuda_tolerance,
    float_dtypes,
    full_float32,
    requires_cuda,
    to_device,
)

pytestmark = requires_cuda()

POOLER_TOLERANCE = (1e-12, 1e-5)  # (float64, float32)
FPN_TOLERANCE = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=6e-2, atol=6e-2),
}


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("th, tw, oh, ow", UPSAMPLE_SIZES)
def test_upsample_add(th, tw, oh, ow, channels_last, dtype):
    top, lateral, grad = upsample_case(th, tw, oh, ow, dtype, channels=5, channels_last=channels_last)
    results = {}
    for device in ("cpu", "cuda"):
        t, lat, gr = to_device([top.requires_grad_(), lateral.requires_grad_(), grad], device)
        out = detops_fpn.fpn_upsample_add(t, lat)
        results[device] = (out, *torch.autograd.grad(out, (t, lat), gr))
    for what, cuda, cpu in zip(("output", "top gradient", "lateral gradient"), results["cuda"], results["cpu"]):
        assert_cuda_matches_cpu(cuda, cpu, None, what)


NAMES = ["p2", "p3", "p4", "p5"]


def _pooler_case(image, counts, seed):
    g = torch.Generator().manual_seed(seed)
    h, w = image
    feats = OrderedDict(
        (name, torch.randn(2, 6, -(-h // 2 ** (i + 2)), -(-w // 2 ** (i + 2)), generator=g))
        for i, name in enumerate(NAMES)
    )
    boxes = []
    for n in counts:
        size = torch.exp(torch.rand(n, 2, generator=g) * 6) * 2  # 2 .. 800 pixels: every level
        corner = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) - size / 4
        boxes.append(torch.cat((corner, corner + size), dim=1))
    boxes[0][:3] = torch.tensor([[50.0, 10, 40, 30], [float("nan"), 10, 40, 30], [10, 10, float("inf"), 60]])
    return feats, boxes


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("output_size, sampling_ratio", [(7, 2), ((5, 4), -1), (3, 0)])
def test_multi_scale_roi_align(output_size, sampling_ratio, dtype):
    image = (320, 480)
    feats, boxes = _pooler_case(image, [40, 30], seed=sampling_ratio + 3)
    for f in feats.values():
        f.requires_grad_()
    results = {}
    for device in ("cpu", "cuda"):
        x, b = to_device(feats, device, dtype), to_device(boxes, device, dtype)
        out = detops_fpn.MultiScaleRoIAlign(NAMES, output_size, sampling_ratio)(x, b, [image, (300, 470)])
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)
        results[device] = (out, *torch.autograd.grad(out, list(x.values()), grad))
    tol = cpu_vs_cuda_tolerance(dtype, *POOLER_TOLERANCE)
    for what, cuda, cpu in zip(["output"] + [f"{n} gradient" for n in NAMES], results["cuda"], results["cpu"]):
        assert_cuda_matches_cpu(cuda, cpu, tol, what)


IN_CHANNELS = [8, 16, 24, 32]


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("extra", ["maxpool", "p6p7"])
def test_feature_pyramid_network(extra, dtype):
    torch.manual_seed(0)
    blocks = detops_fpn.LastLevelMaxPool() if extra == "maxpool" else detops_fpn.LastLevelP6P7(32, 16)
    fpn = detops_fpn.FeaturePyramidNetwork(IN_CHANNELS, 16, extra_blocks=blocks)
    g = torch.Generator().manual_seed(1)
    feats = OrderedDict(
        (f"c{i + 2}", torch.randn(2, c, -(-100 // 2 ** (i + 2)), -(-76 // 2 ** (i + 2)), generator=g))
        for i, c in enumerate(IN_CHANNELS)
    )
    for f in feats.values():
        f.requires_grad_()
    results = {}
    for device in ("cpu", "cuda"):
        fpn.to(device, dtype).zero_grad()
        x = to_device(feats, device, dtype)
        with full_float32():
            out = fpn(x)
            loss_weights = torch.Generator().manual_seed(2)
            loss = sum(
                (v.float() * torch.randn(v.shape, generator=loss_weights).to(device)).sum() for v in out.values()
            )
            loss.backward()
        results[device] = (
            list(out.values()),
            [x[k].grad for k in x],
            [p.grad.clone() for p in fpn.parameters()],
        )
    names = [n for n, _ in fpn.named_parameters()]
    tol = FPN_TOLERANCE[dtype]
    cuda, cpu = results["cuda"], results["cpu"]
    for k, (a, b) in enumerate(zip(cuda[0], cpu[0])):
        assert_cuda_matches_cpu(a, b, tol, f"output {k}")
    for k, (a, b) in enumerate(zip(cuda[1], cpu[1])):
        assert_cuda_matches_cpu(a, b, tol, f"gradient of c{k + 2}")
    for name, a, b in zip(names, cuda[2], cpu[2]):
        assert_cuda_matches_cpu(a, b, tol, f"gradient of {name}")
