"""Run an existing torchvision detection model on detops ops, in one call.

    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    with detops.use_detops(model):
        detections = model(images)

Inside the block:

- the model's FeaturePyramidNetwork, MultiScaleRoIAlign, RoIAlign, RoIPool, PSRoIAlign,
  PSRoIPool and DeformConv2d submodules are replaced by their detops twins. The twins
  reuse the original parameter tensors (no copy: an optimizer keeps working) and keep
  the pooler's inferred scales; making them draws no random numbers, so the model's
  samplers draw the same inside the block as outside;
- the functions torchvision's detection code calls at run time (``nms``, ``batched_nms``,
  ``box_iou``, ``clip_boxes_to_image``, ``remove_small_boxes`` in
  ``torchvision.ops.boxes``, ``roi_align`` in ``torchvision.models.detection.roi_heads``, and
  the losses RetinaNet and FCOS train with: ``sigmoid_focal_loss`` in their modules and
  FCOS's ``generalized_box_iou_loss``) are detops'.

Leaving the block puts every original module and function back. The function swap is
process-wide (module attributes), so do not run torchvision-only code on another thread
meanwhile. torchvision is imported only when this is called.
"""

import contextlib
from typing import Iterator, List, Optional, Tuple

import torch
from torch import nn

import detops_deform
import detops_fpn
import detops_losses
import detops_nms
import detops_roi


def _function_patches() -> List[Tuple[object, str, object]]:
    import torchvision.models.detection.fcos as fcos
    import torchvision.models.detection.retinanet as retinanet
    import torchvision.models.detection.roi_heads as roi_heads
    import torchvision.ops.boxes as tv_boxes

    return [
        (tv_boxes, "nms", detops_nms.nms),
        (tv_boxes, "batched_nms", detops_nms.batched_nms),
        (tv_boxes, "box_iou", detops_nms.box_iou),
        (tv_boxes, "clip_boxes_to_image", detops_nms.clip_boxes_to_image),
        (tv_boxes, "remove_small_boxes", detops_nms.remove_small_boxes),
        (roi_heads, "roi_align", detops_roi.roi_align),
        (retinanet, "sigmoid_focal_loss", detops_losses.sigmoid_focal_loss),
        (fcos, "sigmoid_focal_loss", detops_losses.sigmoid_focal_loss),
        (fcos, "generalized_box_iou_loss", detops_losses.generalized_box_iou_loss),
    ]


def _twin_fpn(old: nn.Module) -> Optional[nn.Module]:
    import torchvision.ops.feature_pyramid_network as tv_fpn

    extra = old.extra_blocks
    # Twins are built on the meta device (their parameters are replaced by the original's at
    # once): initialising real ones would draw from torch's global RNG and so change what
    # the model's samplers draw inside the block.
    if extra is None:
        new_extra = None
    elif type(extra) is tv_fpn.LastLevelMaxPool:
        new_extra = detops_fpn.LastLevelMaxPool()
    elif type(extra) is tv_fpn.LastLevelP6P7:
        with torch.device("meta"):
            new_extra = detops_fpn.LastLevelP6P7(1, 1)
        new_extra.p6, new_extra.p7, new_extra.use_P5 = extra.p6, extra.p7, extra.use_P5
    else:
        return None  # a custom extra block: keep torchvision's FPN
    with torch.device("meta"):
        new = detops_fpn.FeaturePyramidNetwork([1], 1, extra_blocks=new_extra)
    new.inner_blocks, new.layer_blocks = old.inner_blocks, old.layer_blocks
    new.train(old.training)
    return new


def _twin(module: nn.Module) -> Optional[nn.Module]:
    import torchvision.ops as tv

    kind = type(module)
    if kind is tv.FeaturePyramidNetwork:
        return _twin_fpn(module)
    if kind is tv.MultiScaleRoIAlign:
        new = detops_fpn.MultiScaleRoIAlign(
            module.featmap_names,
            module.output_size,
            module.sampling_ratio,
            canonical_scale=module.canonical_scale,
            canonical_level=module.canonical_level,
        )
        if module.scales is not None and module.map_levels is not None:
            m = module.map_levels
            new.scales = list(module.scales)
            new.map_levels = detops_fpn.poolers.LevelMapper(m.k_min, m.k_max, m.s0, m.lvl0, m.eps)
        return new
    if kind is tv.RoIAlign:
        return detops_roi.RoIAlign(module.output_size, module.spatial_scale, module.sampling_ratio, module.aligned)
    if kind is tv.RoIPool:
        return detops_roi.RoIPool(module.output_size, module.spatial_scale)
    if kind is tv.PSRoIAlign:
        return detops_roi.PSRoIAlign(module.output_size, module.spatial_scale, module.sampling_ratio)
    if kind is tv.PSRoIPool:
        return detops_roi.PSRoIPool(module.output_size, module.spatial_scale)
    if kind is tv.DeformConv2d:
        with torch.device("meta"):  # as in _twin_fpn
            new = detops_deform.DeformConv2d(
                module.in_channels,
                module.out_channels,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                module.groups,
                bias=module.bias is not None,
            )
        new.weight, new.bias = module.weight, module.bias
        return new
    return None


def _swap_modules(model: nn.Module) -> List[Tuple[nn.Module, str, nn.Module]]:
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            twin = _twin(child)
            if twin is not None:
                setattr(parent, name, twin)
                swapped.append((parent, name, child))
    return swapped


@contextlib.contextmanager
def patched(functions: List[Tuple[object, str, object]]) -> Iterator[None]:
    """Within the block, each ``(owner, name, replacement)`` replaces ``owner.name``."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in functions]
    try:
        for owner, name, replacement in functions:
            setattr(owner, name, replacement)
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


@contextlib.contextmanager
def use_detops(model: Optional[nn.Module] = None) -> Iterator[Optional[nn.Module]]:
    """Within the block, ``model`` (a torchvision detection model, or any module holding
    torchvision.ops modules) and torchvision's detection code run on detops ops.

    Args:
        model (nn.Module, optional): the model whose torchvision.ops submodules are
            swapped for their detops twins inside the block; None swaps only the functions.

    Returns:
        A context manager that yields ``model`` and puts every original module and function
        back on exit.

    Devices, dtypes, determinism, ONNX: those of the detops ops swapped in (CPU and CUDA
    kernels;
    see each package's page and the Devices, data checks and determinism page). For ONNX
    or ``torch.export`` of a whole detector use :func:`exportable` or
    :func:`export_detector` (see the Deployment page).
    """
    swapped = _swap_modules(model) if model is not None else []
    try:
        with patched(_function_patches()):
            yield model
    finally:
        for parent, name, original in reversed(swapped):
            twin = getattr(parent, name)
            if isinstance(twin, detops_fpn.MultiScaleRoIAlign) and twin.scales is not None:
                # keep what the twin inferred, as the original would have
                original.scales = list(twin.scales)
                original.map_levels = _tv_level_mapper(twin.map_levels)
            setattr(parent, name, original)


def _tv_level_mapper(m):
    from torchvision.ops.poolers import LevelMapper

    return LevelMapper(m.k_min, m.k_max, m.s0, m.lvl0, m.eps)
