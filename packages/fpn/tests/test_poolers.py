"""MultiScaleRoIAlign: torchvision's level mapping, scale inference and results."""

from collections import OrderedDict

import pytest
import torch

import detops_fpn
import detops_roi
from detops_core.testing import assert_scripts, devices, requires_cuda, torchvision_ops
from detops_fpn.poolers import LevelMapper

tv_poolers = torchvision_ops() and torchvision_ops().poolers

NAMES = ["p2", "p3", "p4", "p5"]


def _features(image, channels=8, batch=2, seed=0, dtype=torch.float32, device="cpu", requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    h, w = image
    return OrderedDict(
        (
            name,
            torch.randn(batch, channels, -(-h // 2 ** (i + 2)), -(-w // 2 ** (i + 2)), generator=g)
            .to(device, dtype)
            .requires_grad_(requires_grad),
        )
        for i, name in enumerate(NAMES + ["pool"])
    )


def _boxes(image, counts, seed=0, dtype=torch.float32, device="cpu"):
    """Boxes of every scale: tiny, canonical (224) and image-sized, some off the image."""
    g = torch.Generator().manual_seed(seed)
    h, w = image
    out = []
    for n in counts:
        size = torch.exp(torch.rand(n, 2, generator=g) * 6) * 2  # 2 .. 800 pixels
        corner = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) - size / 4
        out.append(torch.cat((corner, corner + size), dim=1).to(device, dtype))
    return out


def _definition(pooler, feats, boxes, image_shapes):
    """Per-level detops.roi_align calls, scattered back: what MultiScaleRoIAlign means."""
    maps = [v for k, v in feats.items() if k in pooler.featmap_names]
    rois = torch.cat([torch.cat((torch.full_like(b[:, :1], i), b), dim=1) for i, b in enumerate(boxes)])
    if len(maps) == 1:
        return detops_roi.roi_align(maps[0], rois, pooler.output_size, pooler.scales[0], pooler.sampling_ratio)
    levels = pooler.map_levels(boxes)
    out = torch.zeros(len(rois), maps[0].shape[1], *pooler.output_size, dtype=maps[0].dtype, device=maps[0].device)
    for level, (fmap, scale) in enumerate(zip(maps, pooler.scales)):
        idx = torch.where(levels == level)[0]
        out[idx] = detops_roi.roi_align(fmap, rois[idx], pooler.output_size, scale, pooler.sampling_ratio)
    return out


CONFIGS = [
    (NAMES, 7, 2),
    (NAMES, (14, 14), 2),
    (NAMES, 7, -1),
    (["p2", "p4"], 5, 2),  # non-consecutive levels: boxes mapped to p3/p5 stay zero
    (["p3"], 7, 0),  # one level: plain roi_align
]


@pytest.mark.parametrize("names, output_size, sampling_ratio", CONFIGS)
@pytest.mark.parametrize("image", [(800, 1216), (512, 512), (333, 500)])
@pytest.mark.parametrize("device", devices())
def test_matches_torchvision_and_definition(names, output_size, sampling_ratio, image, device):
    feats = _features(image, device=device)
    boxes = _boxes(image, [40, 25], device=device)
    shapes = [image, (image[0] - 20, image[1] - 8)]
    pooler = detops_fpn.MultiScaleRoIAlign(names, output_size, sampling_ratio)
    got = pooler(feats, boxes, shapes)
    assert got.device == feats["p2"].device
    torch.testing.assert_close(got, _definition(pooler, feats, boxes, shapes), rtol=0, atol=0)
    if tv_poolers is not None:
        theirs = tv_poolers.MultiScaleRoIAlign(names, output_size, sampling_ratio)
        torch.testing.assert_close(got, theirs(feats, boxes, shapes), rtol=1e-5, atol=1e-5)
        assert pooler.scales == theirs.scales
        assert (pooler.map_levels.k_min, pooler.map_levels.k_max) == (theirs.map_levels.k_min, theirs.map_levels.k_max)
        assert repr(pooler) == repr(theirs)


def test_scales_are_inferred_once_like_torchvision():
    pooler = detops_fpn.MultiScaleRoIAlign(NAMES, 7, 2)
    pooler(_features((512, 512)), _boxes((512, 512), [5]), [(512, 512)])
    first = list(pooler.scales)
    pooler(_features((256, 256)), _boxes((256, 256), [5]), [(256, 256)])
    assert pooler.scales == first == [1 / 4, 1 / 8, 1 / 16, 1 / 32]


@pytest.mark.parametrize("device", devices())
def test_backward_matches_torchvision_or_definition(device):
    image = (320, 480)
    feats = _features(image, seed=4, device=device, requires_grad=True)
    boxes = _boxes(image, [30, 30], seed=4, device=device)
    pooler = detops_fpn.MultiScaleRoIAlign(NAMES, 7, 2)
    out = pooler(feats, boxes, [image, image])
    grad = torch.randn(out.shape).to(device)
    got = torch.autograd.grad(out, list(feats.values()), grad, allow_unused=True)
    want_out = (
        tv_poolers.MultiScaleRoIAlign(NAMES, 7, 2)(feats, boxes, [image, image])
        if tv_poolers is not None
        else _definition(pooler, feats, boxes, [image, image])
    )
    want = torch.autograd.grad(want_out, list(feats.values()), grad, allow_unused=True)
    for a, b in zip(got, want):
        if b is None:
            assert a is None or a.abs().max() == 0
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("device", devices())
def test_other_dtypes(dtype, device):
    image = (256, 256)
    feats = _features(image, dtype=dtype, device=device)
    boxes = _boxes(image, [20], dtype=dtype, device=device)
    pooler = detops_fpn.MultiScaleRoIAlign(NAMES, 7, 2)
    got = pooler(feats, boxes, [image])
    assert got.dtype == dtype
    want = _definition(pooler, feats, boxes, [image])
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("device", devices())
def test_level_mapper_matches_torchvision(device):
    boxes = _boxes((800, 800), [200], seed=9, device=device)
    ours = LevelMapper(2, 5)(boxes)
    if tv_poolers is not None:
        assert torch.equal(ours, tv_poolers.LevelMapper(2, 5)(boxes))
    area = (boxes[0][:, 2] - boxes[0][:, 0]) * (boxes[0][:, 3] - boxes[0][:, 1])
    expected = torch.clamp(torch.floor(4 + torch.log2(area.sqrt() / 224) + 1e-6), 2, 5).long() - 2
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("device", devices())
def test_empty_boxes(device):
    feats = _features((128, 128), device=device)
    pooler = detops_fpn.MultiScaleRoIAlign(NAMES, 7, 2)
    empty = [torch.zeros(0, 4, device=device), torch.zeros(0, 4, device=device)]
    out = pooler(feats, empty, [(128, 128), (128, 128)])
    assert out.shape == (0, 8, 7, 7) and out.device.type == device


# Boxes left on the CPU next to CUDA feature maps: the native op must refuse them (a CUDA
# kernel would read host memory) with a message naming both devices.
@requires_cuda()
def test_boxes_on_another_device_name_both():
    feats = _features((128, 128), device="cuda")
    boxes = _boxes((128, 128), [5, 4])
    with pytest.raises(RuntimeError, match=r"must be on the same device, got (cuda:\d+ and cpu|cpu and cuda:\d+)"):
        detops_fpn.MultiScaleRoIAlign(NAMES, 7, 2)(feats, boxes, [(128, 128), (128, 128)])


@pytest.mark.parametrize("device", devices())
def test_no_images_is_an_error(device):
    with pytest.raises(ValueError, match="images list should not be empty"):
        detops_fpn.MultiScaleRoIAlign(NAMES, 7, 2)(_features((64, 64), device=device), [], [])


@pytest.mark.parametrize("device", devices())
def test_torchscript(device):
    feats = _features((256, 320), device=device)
    boxes = _boxes((256, 320), [12, 7], device=device)
    assert_scripts(detops_fpn.MultiScaleRoIAlign(NAMES, 7, 2), (feats, boxes, [(256, 320), (250, 300)]))


@pytest.mark.parametrize("device", devices())
def test_compile_fullgraph_forward_and_backward(device):
    image = (256, 320)
    feats = _features(image, seed=2, device=device, requires_grad=True)
    boxes = _boxes(image, [12, 7], seed=2, device=device)
    eager_pooler = detops_fpn.MultiScaleRoIAlign(NAMES, 7, 2)
    compiled = torch.compile(detops_fpn.MultiScaleRoIAlign(NAMES, 7, 2), fullgraph=True)
    got = compiled(feats, boxes, [image, image])
    want = eager_pooler(feats, boxes, [image, image])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    g1 = torch.autograd.grad(got.sum(), feats["p2"])[0]
    g2 = torch.autograd.grad(want.sum(), feats["p2"])[0]
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)
