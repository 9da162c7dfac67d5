"""box_convert and box_area in torchvision's rotated formats ('xywhr', 'cxcywhr',
'xyxyxyxy'): torchvision 0.29.1 is the oracle of every conversion, bit for bit; box_area
(which torchvision refuses for them) against w * h."""

import pytest
import torch
from rotated_reference import corners, random_rotated

import detops_nms
from detops_core.testing import devices

tv_ops = pytest.importorskip("torchvision.ops", reason="torchvision is the oracle of the rotated conversions")

ROTATED = ["xywhr", "cxcywhr", "xyxyxyxy"]


def _rotated_case(n=30, seed=0):
    return random_rotated(n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32]
)
@pytest.mark.parametrize("in_fmt", ROTATED)
@pytest.mark.parametrize("out_fmt", ROTATED)
@pytest.mark.parametrize("device", devices())
def test_rotated_box_convert_equals_torchvision(dtype, in_fmt, out_fmt, device):
    five = _rotated_case(40, 1) * torch.tensor([3.0, 3.0, 2.0, 2.0, 2.0], dtype=torch.float64)
    eight = tv_ops.box_convert(five, "cxcywhr", "xyxyxyxy")
    boxes = (eight if in_fmt == "xyxyxyxy" else five).to(device, dtype)
    got = detops_nms.box_convert(boxes, in_fmt, out_fmt)
    expected = tv_ops.box_convert(boxes, in_fmt, out_fmt)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected), (got - expected).abs().max()
    batched = detops_nms.box_convert(boxes.reshape(4, 10, -1), in_fmt, out_fmt)
    assert torch.equal(batched.reshape(got.shape), got)


def test_rotated_box_convert_scripts():
    boxes = _rotated_case(10, 2).float()
    for in_fmt, out_fmt in [("cxcywhr", "xyxyxyxy"), ("xyxyxyxy", "xywhr"), ("xywhr", "cxcywhr")]:
        b = boxes if in_fmt != "xyxyxyxy" else tv_ops.box_convert(boxes, "cxcywhr", "xyxyxyxy")
        scripted = torch.jit.script(detops_nms.box_convert)
        assert torch.equal(scripted(b, in_fmt, out_fmt), tv_ops.box_convert(b, in_fmt, out_fmt))


@pytest.mark.parametrize("pair", [("xyxy", "cxcywhr"), ("xyxyxyxy", "xywh")])
def test_conversion_between_families_is_refused(pair):
    width = 8 if pair[0] == "xyxyxyxy" else 4
    with pytest.raises(NotImplementedError, match="axis-aligned format .* rotated format"):
        detops_nms.box_convert(torch.zeros(2, width), *pair)
    with pytest.raises(NotImplementedError):
        tv_ops.box_convert(torch.zeros(2, width), *pair)


def test_reference_polygons_are_torchvisions():
    # The one convention: the corners every rotated op (and the reference) uses are the
    # ones torchvision's conversion gives, in the same order.
    boxes = _rotated_case(50, 3)
    expected = tv_ops.box_convert(boxes, "cxcywhr", "xyxyxyxy").reshape(-1, 4, 2)
    got = torch.tensor([corners(b) for b in boxes.tolist()], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", devices())
def test_rotated_box_area(device):
    boxes = _rotated_case(30, 4).to(device)
    area = boxes[:, 2] * boxes[:, 3]
    assert torch.equal(detops_nms.box_area(boxes, fmt="cxcywhr"), area)
    assert torch.equal(detops_nms.box_area(detops_nms.box_convert(boxes, "cxcywhr", "xywhr"), fmt="xywhr"), area)
    quads = detops_nms.box_convert(boxes, "cxcywhr", "xyxyxyxy")
    torch.testing.assert_close(detops_nms.box_area(quads, fmt="xyxyxyxy"), area, rtol=1e-12, atol=0)
    # Either corner order: the absolute shoelace area.
    reversed_quads = quads.reshape(-1, 4, 2).flip(1).reshape(-1, 8)
    torch.testing.assert_close(detops_nms.box_area(reversed_quads, fmt="xyxyxyxy"), area, rtol=1e-12, atol=0)


@pytest.mark.parametrize("fmt", ROTATED)
def test_rotated_formats_need_their_width(fmt):
    with pytest.raises(
        ValueError, match=f"format '{fmt}' must have (5|8) numbers in the last dimension, got shape \\[3, 4\\]"
    ):
        detops_nms.box_area(torch.zeros(3, 4), fmt=fmt)
    with pytest.raises(ValueError, match="last dimension"):
        detops_nms.box_convert(torch.zeros(3, 4), fmt, "xywhr" if fmt != "xywhr" else "cxcywhr")
