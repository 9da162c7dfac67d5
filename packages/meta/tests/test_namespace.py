"""The torchvision.ops names, submodules and the microlibraries' independence."""

import subprocess
import sys

import pytest
import torch

import detops
from detops_core.testing import torchvision_ops

tv_ops = torchvision_ops()

NAMES = [
    "nms",
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "generalized_box_iou_loss",
    "distance_box_iou_loss",
    "complete_box_iou_loss",
    "clip_boxes_to_image",
    "remove_small_boxes",
    "roi_align",
    "roi_pool",
    "ps_roi_align",
    "ps_roi_pool",
    "RoIAlign",
    "RoIPool",
    "PSRoIAlign",
    "PSRoIPool",
    "deform_conv2d",
    "DeformConv2d",
    "FeaturePyramidNetwork",
    "MultiScaleRoIAlign",
    "sigmoid_focal_loss",
]
SUBMODULE_NAMES = {
    "boxes": [
        "nms",
        "batched_nms",
        "box_area",
        "box_convert",
        "box_iou",
        "generalized_box_iou",
        "distance_box_iou",
        "complete_box_iou",
        "clip_boxes_to_image",
        "remove_small_boxes",
    ],
    "giou_loss": ["generalized_box_iou_loss"],
    "diou_loss": ["distance_box_iou_loss"],
    "ciou_loss": ["complete_box_iou_loss"],
    "roi_align": ["roi_align", "RoIAlign"],
    "roi_pool": ["roi_pool", "RoIPool"],
    "ps_roi_align": ["ps_roi_align", "PSRoIAlign"],
    "ps_roi_pool": ["ps_roi_pool", "PSRoIPool"],
    "deform_conv": ["deform_conv2d", "DeformConv2d"],
    "feature_pyramid_network": ["FeaturePyramidNetwork", "ExtraFPNBlock", "LastLevelMaxPool", "LastLevelP6P7"],
    "poolers": ["MultiScaleRoIAlign", "LevelMapper", "initLevelMapper"],
    "focal_loss": ["sigmoid_focal_loss"],
}


@pytest.mark.parametrize("name", NAMES)
def test_top_level_names(name):
    ours = getattr(detops, name)
    assert callable(ours)
    if tv_ops is not None:
        assert callable(getattr(tv_ops, name))


@pytest.mark.parametrize("module", sorted(SUBMODULE_NAMES))
def test_submodules(module):
    import importlib

    ours = importlib.import_module(f"detops.{module}")
    theirs = importlib.import_module(f"torchvision.ops.{module}") if tv_ops is not None else None
    for name in SUBMODULE_NAMES[module]:
        assert callable(getattr(ours, name))
        if theirs is not None:
            assert hasattr(theirs, name)


def test_names_are_the_microlibraries_objects():
    import detops_deform
    import detops_fpn
    import detops_losses
    import detops_nms
    import detops_roi

    assert detops.nms is detops_nms.nms and detops.roi_align is detops_roi.roi_align
    assert detops.DeformConv2d is detops_deform.DeformConv2d
    assert detops.feature_pyramid_network.LastLevelMaxPool is detops_fpn.LastLevelMaxPool
    assert detops.sigmoid_focal_loss is detops_losses.sigmoid_focal_loss is detops.focal_loss.sigmoid_focal_loss


ALONE = {
    "detops_nms": ["detops_roi", "detops_deform", "detops_fpn", "detops"],
    "detops_roi": ["detops_nms", "detops_deform", "detops_fpn", "detops"],
    "detops_deform": ["detops_nms", "detops_roi", "detops_fpn", "detops"],
    "detops_fpn": ["detops_nms", "detops_deform", "detops"],  # fpn needs roi (declared)
    "detops_losses": ["detops_nms", "detops_roi", "detops_deform", "detops_fpn", "detops"],
}


@pytest.mark.parametrize("package", sorted(ALONE))
def test_each_microlibrary_imports_alone(package):
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in ALONE[package])
    code = f"import sys; {blocked}; import torch, {package}; print(sorted(o for o in dir(torch.ops.detops)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_modules_script():
    for module in (
        detops.RoIAlign(7, 0.25, 2),
        detops.RoIPool(7, 0.25),
        detops.PSRoIAlign(7, 0.25, 2),
        detops.PSRoIPool(7, 0.25),
        detops.DeformConv2d(4, 4, 3, padding=1),
        detops.FeaturePyramidNetwork([4, 8], 4, extra_blocks=detops.feature_pyramid_network.LastLevelMaxPool()),
        detops.MultiScaleRoIAlign(["0", "1"], 7, 2),
    ):
        torch.jit.script(module)
