"""Box utilities against torchvision (when present) and against their definitions."""

import pytest
import torch
from nms_reference import random_boxes

import detops_nms
from detops_core.testing import devices, torchvision_ops

tv_ops = torchvision_ops()

FORMATS = ["xyxy", "xywh", "cxcywh"]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.int64]


def _boxes(n=50, dtype=torch.float32, seed=0, device="cpu"):
    b = random_boxes(n, torch.Generator().manual_seed(seed)) - 20
    return b.to(device, dtype)


@pytest.mark.parametrize("in_fmt", FORMATS)
@pytest.mark.parametrize("out_fmt", FORMATS)
@pytest.mark.parametrize("device", devices())
def test_box_convert(in_fmt, out_fmt, device):
    b = _boxes(device=device)
    got = detops_nms.box_convert(b, in_fmt, out_fmt)
    # round trip through xyxy by the definitions
    x1, y1, x2, y2 = detops_nms.box_convert(b, in_fmt, "xyxy").unbind(-1)
    if in_fmt == "xywh":
        assert torch.allclose(torch.stack((x1, y1, x2 - x1, y2 - y1), -1), b)
    if in_fmt == "cxcywh":
        assert torch.allclose(torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), -1), b, atol=1e-5)
    assert torch.allclose(detops_nms.box_convert(got, out_fmt, in_fmt), b, atol=1e-4)
    if tv_ops is not None:
        assert torch.equal(got, tv_ops.box_convert(b, in_fmt, out_fmt))
    batched = detops_nms.box_convert(b.reshape(5, 10, 4), in_fmt, out_fmt)
    assert torch.equal(batched.reshape(50, 4), got)


@pytest.mark.parametrize("fmt", ["xywhr", "cxcywhr", "xyxyxyxy"])
@pytest.mark.parametrize("device", devices())
def test_rotated_formats_are_refused(fmt, device):
    with pytest.raises(NotImplementedError, match="rotated"):
        detops_nms.box_convert(_boxes(device=device), "xyxy", fmt)


@pytest.mark.parametrize("device", devices())
def test_unknown_format(device):
    with pytest.raises(ValueError, match="unsupported box format"):
        detops_nms.box_area(_boxes(device=device), fmt="yxyx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("device", devices())
def test_box_area_and_iou(dtype, fmt, device):
    a, b = _boxes(30, dtype, 1, device), _boxes(20, dtype, 2, device)
    if fmt != "xyxy":
        a = detops_nms.box_convert(a.double(), "xyxy", fmt).to(dtype)
        b = detops_nms.box_convert(b.double(), "xyxy", fmt).to(dtype)
    area = detops_nms.box_area(a, fmt)
    iou = detops_nms.box_iou(a, b, fmt)
    assert area.dtype == (torch.float32 if dtype == torch.float16 else dtype)
    assert iou.shape == (30, 20)
    if tv_ops is not None:
        torch.testing.assert_close(area, tv_ops.box_area(a, fmt), rtol=0, atol=0)
        torch.testing.assert_close(iou, tv_ops.box_iou(a, b, fmt), rtol=0, atol=0, equal_nan=True)
    # definition, in float64 on the xyxy corners
    xa = detops_nms.box_convert(a.double(), fmt, "xyxy").cpu()
    xb = detops_nms.box_convert(b.double(), fmt, "xyxy").cpu()
    area, iou = area.cpu(), iou.cpu()
    ref_area = (xa[:, 2] - xa[:, 0]) * (xa[:, 3] - xa[:, 1])
    torch.testing.assert_close(area.double(), ref_area, rtol=2e-3, atol=1e-2)
    i, j = 3, 7
    w = max(0.0, min(xa[i, 2], xb[j, 2]) - max(xa[i, 0], xb[j, 0]))
    h = max(0.0, min(xa[i, 3], xb[j, 3]) - max(xa[i, 1], xb[j, 1]))
    area_b = (xb[j, 2] - xb[j, 0]) * (xb[j, 3] - xb[j, 1])
    expected = float(w * h / (ref_area[i] + area_b - w * h))
    assert abs(float(iou[i, j]) - expected) < 2e-3


@pytest.mark.parametrize("device", devices())
def test_clip_boxes_to_image(device):
    b = _boxes(40, device=device) * 3
    clipped = detops_nms.clip_boxes_to_image(b, (60, 80))
    assert torch.equal(clipped[:, 0::2], b[:, 0::2].clamp(0, 80))
    assert torch.equal(clipped[:, 1::2], b[:, 1::2].clamp(0, 60))
    batched = detops_nms.clip_boxes_to_image(b.reshape(4, 10, 4), (60, 80))
    assert torch.equal(batched.reshape(40, 4), clipped)
    if tv_ops is not None:
        assert torch.equal(clipped, tv_ops.clip_boxes_to_image(b, (60, 80)))


@pytest.mark.parametrize("device", devices())
def test_remove_small_boxes(device):
    b = _boxes(80, device=device)
    keep = detops_nms.remove_small_boxes(b, 12.5)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    expected = [i for i in range(80) if w[i] >= 12.5 and h[i] >= 12.5]
    assert keep.tolist() == expected and keep.dtype == torch.int64
    if tv_ops is not None:
        assert torch.equal(keep, tv_ops.remove_small_boxes(b, 12.5))
