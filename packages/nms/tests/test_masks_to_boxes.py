"""masks_to_boxes against its definition (the extreme nonzero pixel indices of each mask)
and against torchvision 0.29."""

import pytest
import torch

import detops_nms
from detops_core.testing import assert_scripts, devices, torchvision_ops

tv_ops = torchvision_ops((0, 29))


def _reference(masks):
    """The definition, mask by mask: (min x, min y, max x, max y) over the nonzero pixels,
    zeros for a mask with none; float32."""
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float32)
    for i, mask in enumerate(masks.cpu()):
        ys, xs = torch.nonzero(mask != 0, as_tuple=True)
        if len(ys):
            boxes[i] = torch.tensor([xs.min(), ys.min(), xs.max(), ys.max()], dtype=torch.float32)
    return boxes.to(masks.device)


def _masks(n, h, w, density, dtype, seed, device):
    g = torch.Generator().manual_seed(seed)
    inside = torch.rand((n, h, w), generator=g) < density
    values = torch.randn((n, h, w), generator=g).abs() + 0.5
    if dtype == torch.bool:
        masks = inside
    else:
        masks = torch.where(inside, values, torch.zeros(())).to(dtype)
    return masks.to(device)


CASES = [(7, 9, 11, 0.05), (5, 1, 13, 0.3), (4, 12, 1, 0.3), (3, 6, 6, 1.0), (6, 20, 30, 0.002), (1, 1, 1, 1.0)]
DTYPES = [torch.bool, torch.uint8, torch.int64, torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", devices())
def test_against_definition_and_torchvision(dtype, device):
    for seed, (n, h, w, density) in enumerate(CASES):
        masks = _masks(n, h, w, density, dtype, seed, device)
        masks[0] = 0  # always one empty mask
        got = detops_nms.masks_to_boxes(masks)
        assert got.dtype == torch.float32 and got.device == masks.device and got.shape == (n, 4)
        assert torch.equal(got, _reference(masks))
        if tv_ops is not None:
            assert torch.equal(got, tv_ops.masks_to_boxes(masks))


@pytest.mark.parametrize("device", devices())
def test_single_pixels_and_special_values(device):
    masks = torch.zeros((4, 5, 6), device=device)
    masks[0, 3, 2] = 1  # one pixel: a degenerate box x1 == x2, y1 == y2
    masks[1, 0, 0], masks[1, 4, 5] = -2.0, 0.1  # negative and small values are inside
    masks[2, 2, 4] = float("nan")  # as bool(nan): inside
    masks[3, 1, 1] = float("inf")
    want = torch.tensor([[2, 3, 2, 3], [0, 0, 5, 4], [4, 2, 4, 2], [1, 1, 1, 1]], dtype=torch.float32, device=device)
    assert torch.equal(detops_nms.masks_to_boxes(masks), want)
    if tv_ops is not None:
        assert torch.equal(tv_ops.masks_to_boxes(masks), want)


@pytest.mark.parametrize("shape", [(0, 5, 5), (3, 0, 5), (3, 5, 0), (0, 0, 0), (0,), (2, 0)])
@pytest.mark.parametrize("dtype", [torch.bool, torch.float32])
def test_no_elements_gives_empty_float32(shape, dtype):
    # torchvision's rule, whatever N: zeros((0, 4)), float32, on the masks' device
    got = detops_nms.masks_to_boxes(torch.zeros(shape, dtype=dtype))
    assert got.shape == (0, 4) and got.dtype == torch.float32
    if tv_ops is not None:
        want = tv_ops.masks_to_boxes(torch.zeros(shape, dtype=dtype))
        assert want.shape == got.shape and want.dtype == got.dtype


@pytest.mark.parametrize("shape", [(5, 5), (2, 3, 4, 5), (7,)])
def test_wrong_number_of_dimensions(shape):
    masks = torch.ones(shape)
    with pytest.raises(ValueError, match="masks_to_boxes"):
        detops_nms.masks_to_boxes(masks)
    if tv_ops is not None:
        with pytest.raises(ValueError):
            tv_ops.masks_to_boxes(masks)


def test_scripts():
    # (torchvision's does not: it calls Tensor.bool(), which TorchScript lacks)
    assert_scripts(detops_nms.masks_to_boxes, (_masks(5, 8, 9, 0.1, torch.bool, 0, "cpu"),))
    assert_scripts(detops_nms.masks_to_boxes, (_masks(5, 8, 9, 0.1, torch.float32, 0, "cpu"),))
    assert_scripts(detops_nms.masks_to_boxes, (torch.zeros((0, 8, 9)),))
