"""ONNX export of deform_conv2d and DeformConv2d (detops_deform.onnx → DeformConv, opset
19), run in ONNX Runtime and compared with detops eager to 1e-5."""

import numpy as np
import pytest
import torch

import detops_deform
from detops_core.testing import onnx_session

onnx = pytest.importorskip(
    "detops_deform.onnx", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed"
)

# (in, out, kernel, stride, padding, dilation, groups, offset_groups, mask, bias)
CONFIGS = [
    (4, 6, 3, 1, 1, 1, 1, 1, True, True),
    (4, 6, 3, 1, 1, 1, 1, 1, False, True),
    (4, 6, 3, 1, 1, 1, 1, 1, False, False),
    (4, 6, 3, 2, 0, 1, 2, 1, True, True),
    (8, 4, 3, 1, 2, 2, 2, 4, True, False),
    (4, 4, (1, 3), (2, 1), (0, 1), 1, 4, 2, True, True),
    (3, 5, 1, 1, 0, 1, 1, 1, True, True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_deform_conv2d_matches_eager(config):
    cin, cout, k, stride, padding, dilation, groups, offset_groups, use_mask, bias = config
    torch.manual_seed(0)
    conv = detops_deform.DeformConv2d(cin, cout, k, stride, padding, dilation, groups, bias=bias)
    kh, kw = conv.kernel_size
    g = torch.Generator().manual_seed(1)

    def case(batch, h, w):
        x = torch.randn(batch, cin, h, w, generator=g)
        oh = (h + 2 * conv.padding[0] - conv.dilation[0] * (kh - 1) - 1) // conv.stride[0] + 1
        ow = (w + 2 * conv.padding[1] - conv.dilation[1] * (kw - 1) - 1) // conv.stride[1] + 1
        offset = torch.randn(batch, 2 * offset_groups * kh * kw, oh, ow, generator=g) * 4
        mask = torch.rand(batch, offset_groups * kh * kw, oh, ow, generator=g) if use_mask else None
        return x, offset, mask

    class Call(torch.nn.Module):
        def forward(self, x, offset, mask=None):
            return conv(x, offset, mask)

    x, offset, mask = case(2, 9, 11)
    args = (x, offset) if mask is None else (x, offset, mask)
    run = onnx_session(Call(), args, onnx.translation_table(), tuple({0: torch.export.Dim("b")} for _ in args))
    for batch in (2, 3, 1):
        x, offset, mask = case(batch, 9, 11)
        args = (x, offset) if mask is None else (x, offset, mask)
        (got,) = run(*args)
        np.testing.assert_allclose(got, Call()(*args).detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_dtypes(dtype):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 7, 8, generator=g).to(dtype)
    offset = (torch.randn(1, 18, 7, 8, generator=g) * 3).to(dtype)
    weight = torch.randn(5, 4, 3, 3, generator=g).to(dtype)

    class Call(torch.nn.Module):
        def forward(self, x, offset, weight):
            return detops_deform.deform_conv2d(x, offset, weight, padding=1).double()

    (got,) = onnx_session(Call(), (x, offset, weight), onnx.translation_table())(x, offset, weight)
    tol = 1e-2 if dtype == torch.float16 else 1e-9
    np.testing.assert_allclose(got, Call()(x, offset, weight).numpy(), rtol=tol, atol=tol)
