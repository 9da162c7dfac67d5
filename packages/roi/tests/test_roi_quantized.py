"""roi_align of quantized CPU tensors against torchvision 0.29.1's qroi_align (its only
oracle: the result is defined by that kernel's float32 arithmetic), and the refusals."""

import itertools

import pytest
import torch

from detops_roi import roi_align

tv_ops = pytest.importorskip(
    "torchvision.ops", reason="torchvision is not installed (the oracle of quantized RoI Align)"
)
if not hasattr(torch, "quint8"):
    pytest.skip("this torch has no quantized dtypes", allow_module_level=True)

QDTYPES = (torch.quint8, torch.qint8, torch.qint32)
# (scale, zero point): torchvision's test values and some that round unevenly.
QPARAMS = ((1.0, 0), (2.0, 10), (0.1, 50), (0.37, 3), (0.013, 100))


def _map(qdtype, scale, zero_point, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 120, (1, 3, 10, 12), generator=g).float()
    return torch.quantize_per_tensor(x, scale, zero_point, qdtype)


def _rois(qdtype, scale, zero_point, seed, k=120):
    g = torch.Generator().manual_seed(seed)
    rois = torch.randint(0, 6, (k, 5), generator=g).float()
    rois[:, 0] = 0
    rois[:, 3:] += rois[:, 1:3]
    # Boxes reaching past the map on every side, and thin or point boxes.
    corners = torch.rand(k // 4, 4, generator=g) * 30 - 10
    rois[: k // 4, 1:3] = torch.minimum(corners[:, :2], corners[:, 2:])
    rois[: k // 4, 3:] = torch.maximum(corners[:, :2], corners[:, 2:])
    rois[-3:, 3:] = rois[-3:, 1:3]
    return torch.quantize_per_tensor(rois, scale, zero_point, qdtype)


def _assert_same(expected, actual):
    assert actual.dtype == expected.dtype
    assert actual.q_scale() == expected.q_scale() and actual.q_zero_point() == expected.q_zero_point()
    assert torch.equal(actual.int_repr(), expected.int_repr())


@pytest.mark.parametrize("qdtype", QDTYPES)
@pytest.mark.parametrize("scale, zero_point", QPARAMS)
@pytest.mark.parametrize("aligned", (False, True))
def test_matches_torchvision(qdtype, scale, zero_point, aligned):
    zero_point = min(zero_point, 127) if qdtype == torch.qint8 else zero_point
    for seed, (output_size, spatial_scale, sampling_ratio) in enumerate(
        itertools.product((5, (3, 2)), (1.0, 0.7), (-1, 2))
    ):
        x = _map(qdtype, scale, zero_point, seed)
        rois = _rois(qdtype, scale * 0.5, zero_point, seed)
        args = (output_size, spatial_scale, sampling_ratio, aligned)
        _assert_same(tv_ops.roi_align(x, rois, *args), roi_align(x, rois, *args))


def test_rois_quantized_differently_from_the_input():
    x = _map(torch.qint32, 0.05, 7, 0)
    rois = _rois(torch.qint32, 0.25, -3, 1)
    _assert_same(tv_ops.roi_align(x, rois, 3, 0.5, -1, True), roi_align(x, rois, 3, 0.5, -1, True))


def test_module_and_no_rois():
    x = _map(torch.quint8, 0.5, 4, 2)
    rois = _rois(torch.quint8, 1.0, 0, 3)
    module = tv_ops.RoIAlign(4, 1.0, -1)
    _assert_same(module(x, rois), torch.ops.detops.roi_align(x, rois, 1.0, 4, 4, -1, False))
    boxes = torch.quantize_per_tensor(rois.dequantize()[:7, 1:], 1.0, 0, torch.quint8)
    _assert_same(tv_ops.roi_align(x, [boxes], 2), roi_align(x, [boxes], 2))
    empty = rois[:0]
    _assert_same(tv_ops.roi_align(x, empty, 2), roi_align(x, empty, 2))


def test_refusals():
    x = _map(torch.quint8, 0.5, 4, 2)
    rois = _rois(torch.quint8, 1.0, 0, 3)
    with pytest.raises(ValueError, match="rois must also be quantized"):
        roi_align(x, rois.dequantize(), 2)
    with pytest.raises(ValueError, match="input must be quantized too"):
        roi_align(x.dequantize(), rois, 2)
    with pytest.raises(RuntimeError, match="input should have the same type as rois"):
        roi_align(x, torch.quantize_per_tensor(rois.dequantize(), 1.0, 0, torch.qint32), 2)
    with pytest.raises(RuntimeError, match=r"one image"):
        roi_align(torch.cat([x, x]), rois, 2)
    for sub_byte in (torch.quint4x2, torch.quint2x4):  # torchvision fails on these too
        with pytest.raises(RuntimeError, match="quantized input must be one of"):
            roi_align(torch.quantize_per_tensor(x.dequantize(), 1.0, 0, sub_byte), rois, 2)
    with pytest.raises(RuntimeError, match=r"rois must be a 2-D tensor of shape \[K, 5\]"):
        roi_align(x, rois[:, :4], 2)
