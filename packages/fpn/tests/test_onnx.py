"""ONNX export of fpn_upsample_add, FeaturePyramidNetwork (each extra block) and
MultiScaleRoIAlign with detops.onnx's translations, run in ONNX Runtime and compared with
detops eager, re-run at other image sizes and box counts than exported."""

from collections import OrderedDict

import numpy as np
import pytest
import torch

import detops_fpn
from detops_core.testing import onnx_session
from detops_fpn.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

onnx_fpn = pytest.importorskip(
    "detops_fpn.onnx", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed"
)
import detops_roi.onnx  # noqa: E402  (after the skip: needs onnxscript)


def _table():
    return {**onnx_fpn.translation_table(), **detops_roi.onnx.translation_table()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_upsample_add_is_bitwise_eager(dtype):
    class Call(torch.nn.Module):
        def forward(self, top, lateral):
            return detops_fpn.fpn_upsample_add(top, lateral).double()

    g = torch.Generator().manual_seed(0)
    top, lateral = torch.randn(1, 3, 13, 19, generator=g).to(dtype), torch.randn(1, 3, 25, 38, generator=g).to(dtype)
    dims = (
        {2: torch.export.Dim("th"), 3: torch.export.Dim("tw")},
        {2: torch.export.Dim("h"), 3: torch.export.Dim("w")},
    )
    run = onnx_session(Call(), (top, lateral), _table(), dims)
    for th, tw, h, w in ((13, 19, 25, 38), (7, 9, 13, 17), (50, 76, 100, 152), (5, 5, 5, 5), (4, 6, 9, 11)):
        top, lateral = torch.randn(1, 3, th, tw, generator=g).to(dtype), torch.randn(1, 3, h, w, generator=g).to(dtype)
        (got,) = run(top, lateral)
        np.testing.assert_array_equal(got, Call()(top, lateral).numpy())


class Pyramid(torch.nn.Module):
    def __init__(self, extra):
        super().__init__()
        self.fpn = detops_fpn.FeaturePyramidNetwork([4, 8, 16], 8, extra_blocks=extra)

    def forward(self, c3, c4, c5):
        return list(self.fpn(OrderedDict(c3=c3, c4=c4, c5=c5)).values())


@pytest.mark.parametrize("extra", [None, LastLevelMaxPool(), LastLevelP6P7(8, 8)], ids=["none", "maxpool", "p6p7"])
def test_feature_pyramid_network(extra):
    torch.manual_seed(0)
    model = Pyramid(extra).eval()

    def inputs(h, w):
        return tuple(torch.randn(1, c, -(-h // s), -(-w // s)) for c, s in ((4, 8), (8, 16), (16, 32)))

    h, w = (torch.export.Dim(n, min=2, max=64) for n in ("h", "w"))
    dims = tuple(
        {2: h * 4 if i == 0 else (h * 2 if i == 1 else h), 3: w * 4 if i == 0 else (w * 2 if i == 1 else w)}
        for i in range(3)
    )
    run = onnx_session(model, inputs(256, 320), _table(), dims)
    for size in ((256, 320), (128, 416)):
        args = inputs(*size)
        for got, want in zip(run(*args), model(*args)):
            np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-5, atol=1e-5)


class Pooler(torch.nn.Module):
    def __init__(self, sampling_ratio):
        super().__init__()
        self.pool = detops_fpn.MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, sampling_ratio)
        self.names = ["p2", "p3", "p4", "p5"]

    def forward(self, p2, p3, p4, p5, boxes):
        return self.pool(OrderedDict(zip(self.names, (p2, p3, p4, p5))), [boxes], [(256, 320)])


@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_multi_scale_roi_align(sampling_ratio):
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(1, 4, 64 // 2**i, 80 // 2**i, generator=g) for i in range(4)]

    def boxes(n):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([320.0, 256.0])
        wh = torch.exp(torch.rand(n, 2, generator=g) * 6)  # 1 .. 400 pixels: every level
        out = torch.cat((xy, xy + wh), dim=1)
        if n >= 3:
            out[0] = torch.tensor([50.0, 10.0, 40.0, 30.0])  # negative area: no level, zero row
            out[1] = torch.tensor([10.0, 10.0, 10.0, 60.0])  # zero area: the first level
        return out

    model = Pooler(sampling_ratio)
    model(*feats, boxes(4))  # infers the scales, as the first eager call does
    run = onnx_session(model, (*feats, boxes(40)), _table(), (None, None, None, None, {0: torch.export.Dim("k")}))
    for n in (40, 7, 0):
        b = boxes(n)
        (got,) = run(*feats, b)
        np.testing.assert_allclose(got, model(*feats, b).numpy(), rtol=1e-5, atol=1e-5)
