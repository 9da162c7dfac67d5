"""ONNX export of the RoI ops and modules (detops_roi.onnx), run in ONNX Runtime and
compared with detops eager: values to 1e-5 (the summation order differs), the same zero
rows, and re-runs with other numbers of boxes than exported."""

import numpy as np
import pytest
import torch

import detops_roi
from detops_core.testing import onnx_session

onnx = pytest.importorskip("detops_roi.onnx", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")

TOL = dict(rtol=1e-5, atol=1e-5)


def _rois(k, seed, height=20, width=24, adversarial=True):
    """Boxes on, across and off the map, with degenerate and non-finite rows."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g) * torch.tensor([width * 2.5, height * 2.5]) - 10
    wh = torch.rand(k, 2, generator=g) * 30
    boxes = torch.cat((xy, xy + wh), dim=1)
    if adversarial and k >= 8:
        boxes[0] = torch.tensor([3.0, 3.0, 3.0, 3.0])  # a point
        boxes[1] = torch.tensor([30.0, 20.0, 4.0, 2.0])  # inverted
        boxes[2] = torch.tensor([-50.0, -50.0, -40.0, -45.0])  # off the map
        boxes[3] = torch.tensor([0.0, 0.0, 2.0 * width, 2.0 * height])  # the whole map at scale 0.5
        boxes[4, 0] = float("nan")
        boxes[5, 2] = float("inf")
        boxes[6] = torch.tensor([5.0, 5.0, 5.5, 40.0])  # thin
    batch = torch.randint(0, 2, (k, 1), generator=g).to(boxes.dtype)
    return torch.cat((batch, boxes), dim=1)


def _input(channels, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, channels, 20, 24, generator=g).to(dtype)


def _dims():
    return ({0: torch.export.Dim.AUTO}, {0: torch.export.Dim("k")})


class Call(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, rois):
        return self.fn(x, rois)


def _check(model, x, rois, expected_fn, reruns=((31, 11), (5, 12), (0, 13))):
    run = onnx_session(model, (x, rois), onnx.translation_table(), _dims())
    for rois_now in (rois, *(_rois(k, seed) for k, seed in reruns)):
        rois_now = rois_now.to(x.dtype)
        (got,) = run(x, rois_now)
        want = expected_fn(x, rois_now)
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got.astype(np.float64), want.double().numpy(), **TOL)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2])
def test_roi_align(sampling_ratio, aligned):
    x, rois = _input(4, 1), _rois(40, 1)
    fn = lambda x, r: detops_roi.roi_align(x, r, (3, 4), 0.5, sampling_ratio, aligned)  # noqa: E731
    _check(Call(fn), x, rois, fn)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_roi_align_dtypes(dtype):
    x, rois = _input(4, 2, dtype), _rois(40, 2).to(dtype)
    fn = lambda x, r: detops_roi.roi_align(x, r, 5, 0.5, 2, True)  # noqa: E731
    # Compared in float64 (numpy has no bfloat16); the op's own rounding to `dtype` is in the graph.
    run = onnx_session(Call(lambda x, r: fn(x, r).double()), (x, rois), onnx.translation_table())
    (got,) = run(x, rois)
    tol = {torch.float16: 1e-3, torch.bfloat16: 1e-2}.get(dtype, 1e-5)
    want = fn(x, rois).double().numpy()
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=tol, atol=tol)


def test_roi_pool():
    x, rois = _input(4, 3), _rois(40, 3)
    fn = lambda x, r: detops_roi.roi_pool(x, r, (3, 4), 0.5)  # noqa: E731
    _check(Call(fn), x, rois, fn)


@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2])
def test_ps_roi_align(sampling_ratio):
    x, rois = _input(2 * 9, 4), _rois(40, 4)
    fn = lambda x, r: detops_roi.ps_roi_align(x, r, 3, 0.5, sampling_ratio)  # noqa: E731
    _check(Call(fn), x, rois, fn)


def test_ps_roi_pool():
    x, rois = _input(3 * 6, 5), _rois(40, 5)
    fn = lambda x, r: detops_roi.ps_roi_pool(x, r, (2, 3), 0.5)  # noqa: E731
    _check(Call(fn), x, rois, fn)


@pytest.mark.parametrize(
    "module",
    [
        detops_roi.RoIAlign((3, 3), 0.5, -1, aligned=True),
        detops_roi.RoIPool((2, 2), 0.5),
        detops_roi.PSRoIAlign(2, 0.5, 2),
        detops_roi.PSRoIPool(2, 0.5),
    ],
    ids=lambda m: type(m).__name__,
)
def test_modules(module):
    x, rois = _input(8, 6), _rois(40, 6)
    _check(module, x, rois, module)


class MultiLevel(torch.nn.Module):
    def __init__(self, sampling_ratio, aligned):
        super().__init__()
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, a, b, rois, levels):
        return detops_roi.multi_level_roi_align([a, b], rois, levels, 3, [0.5, 0.25], self.sampling_ratio, self.aligned)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_multi_level_roi_align(sampling_ratio, aligned):
    a, b = _input(4, 7), _input(4, 8)[:, :, :10, :12]
    model = MultiLevel(sampling_ratio, aligned)

    def case(k, seed):
        g = torch.Generator().manual_seed(seed)
        return _rois(k, seed), torch.randint(-1, 2, (k,), generator=g)  # -1: no level, a zero row

    rois, levels = case(40, 7)
    k = torch.export.Dim("k")
    run = onnx_session(model, (a, b, rois, levels), onnx.translation_table(), (None, None, {0: k}, {0: k}))
    for n, seed in ((40, 7), (17, 9), (0, 10)):
        rois, levels = case(n, seed)
        (got,) = run(a, b, rois, levels)
        np.testing.assert_allclose(got, model(a, b, rois, levels).numpy(), **TOL)
