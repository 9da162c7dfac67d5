"""torch.export of torchvision's detection models with a dynamic image size.

    with torch.no_grad():
        program = detops.export_detector(model.eval(), [image])   # list of [3, H, W] in [0, 1]
        detections = program.module()([other_image])               # same as model([other_image])

:func:`exportable` is :func:`use_detops` plus export-friendly replacements for the few
pieces of torchvision's inference code that trace badly, each with the same results:

- ``GeneralizedRCNNTransform.resize`` / ``batch_images``: the scale and the padded size
  with ``torch.sym_min``/``sym_max`` instead of Python's min/max (which would fix the image's
  aspect ratio at trace time);
- ``_utils._topk_min`` (RPN, RetinaNet, FCOS, SSD): ``torch.sym_min``, for the same reason;
- ``RoIHeads.postprocess_detections``: without ``BoxCoder.decode``'s branch on the number of
  proposals;
- ``paste_masks_in_image`` (``GeneralizedRCNNTransform.postprocess``) and
  ``keypointrcnn_inference``: all detections at once instead of one at a time at sizes read
  from box coordinates;
- ``MultiScaleRoIAlign`` scales, inferred eagerly from one blank image before tracing.

The program is valid for image sizes where every pyramid level keeps at least 2 pixels per
side after the model's resize (FPN models: the resized, padded image at least 96 pixels, 160
for RetinaNet and FCOS's stride-128 level): a 1-pixel level broadcasts differently, and the
program raises a guard error for such an image.
"""

import contextlib
import types
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import detops_nms

from ._torchvision import patched, use_detops


def _rcnn_postprocess_detections(
    self, class_logits: Tensor, box_regression: Tensor, proposals: List[Tensor], image_shapes: List[Tuple[int, int]]
) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
    # RoIHeads.postprocess_detections without BoxCoder.decode's `if box_sum > 0` (a branch
    # on the number of proposals, unknown when tracing): decode_single gives the same boxes.
    num_classes = class_logits.shape[-1]
    boxes_per_image = [p.shape[0] for p in proposals]
    rois = torch.cat(proposals, dim=0)
    pred_boxes = self.box_coder.decode_single(box_regression, rois).reshape(rois.shape[0], num_classes, 4)
    pred_scores = F.softmax(class_logits, -1)

    all_boxes, all_scores, all_labels = [], [], []
    for boxes, scores, image_shape in zip(
        pred_boxes.split(boxes_per_image, 0), pred_scores.split(boxes_per_image, 0), image_shapes
    ):
        boxes = detops_nms.clip_boxes_to_image(boxes, image_shape)
        labels = torch.arange(num_classes, device=scores.device).view(1, -1).expand_as(scores)
        boxes = boxes[:, 1:].reshape(-1, 4)
        scores = scores[:, 1:].reshape(-1)
        labels = labels[:, 1:].reshape(-1)

        inds = torch.where(scores > self.score_thresh)[0]
        boxes, scores, labels = boxes[inds], scores[inds], labels[inds]
        keep = detops_nms.remove_small_boxes(boxes, min_size=1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = detops_nms.batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
        all_boxes.append(boxes[keep])
        all_scores.append(scores[keep])
        all_labels.append(labels[keep])
    return all_boxes, all_scores, all_labels


def _resize(self, image: Tensor, target: Optional[Dict[str, Tensor]] = None):
    # GeneralizedRCNNTransform.resize in eval mode. torchvision picks the scale with Python's
    # min() of two ratios, a guard on the image's aspect ratio when the size is symbolic:
    # torch.sym_min computes the same double without choosing a branch at trace time.
    if self.training or target is not None or self.fixed_size is not None:
        return type(self).resize(self, image, target)
    h, w = image.shape[-2:]
    size = self.min_size[-1]
    scale = torch.sym_min(size / torch.sym_min(h, w), self.max_size / torch.sym_max(h, w))
    image = F.interpolate(
        image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
    )[0]
    return image, target


def _batch_images(self, images: List[Tensor], size_divisible: int = 32) -> Tensor:
    # GeneralizedRCNNTransform.batch_images with torch.sym_max in place of max() (a guard
    # comparing the images' symbolic sizes) and the padding done by F.pad.
    height = images[0].shape[-2]
    width = images[0].shape[-1]
    for image in images[1:]:
        height = torch.sym_max(height, image.shape[-2])
        width = torch.sym_max(width, image.shape[-1])
    height = (height + size_divisible - 1) // size_divisible * size_divisible
    width = (width + size_divisible - 1) // size_divisible * size_divisible
    return torch.stack([F.pad(i, (0, width - i.shape[-1], 0, height - i.shape[-2])) for i in images])


def _source_index(dst: Tensor, out_size: Tensor, in_size: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    # Where F.interpolate(mode="bilinear", align_corners=False) resizing `in_size` pixels to
    # `out_size` reads output pixel `dst`: the two source pixels and their weights, computed
    # in float32 in the order ATen's CPU kernel uses, so that results match it bit for bit
    # (up to the compiler's fused multiply-adds).
    scale = float(in_size) / out_size.float()
    src = (scale * (dst.float() + 0.5) - 0.5).clamp(min=0)
    i0 = src.long().clamp(max=in_size - 1)  # truncation is floor here: src >= 0
    lambda1 = (src - i0).clamp(0, 1)
    i1 = i0 + (i0 < in_size - 1).long()
    return i0, i1, 1 - lambda1, lambda1


def _paste_masks_in_image(masks: Tensor, boxes: Tensor, img_shape: Tuple[int, int], padding: int = 1) -> Tensor:
    # torchvision's paste_masks_in_image resizes each mask to its box with F.interpolate and
    # copies it into a blank image, one mask at a time, at sizes read from the boxes' values.
    # Here every mask is resampled at once: each image pixel inside a box reads the bilinear
    # sample F.interpolate would have put there, pixels outside are 0.
    m = masks.shape[-1]
    scale = float(m + 2 * padding) / m
    padded = F.pad(masks, (padding,) * 4)[:, 0]
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    x0, x1 = (x_c - w_half).long(), (x_c + w_half).long()
    y0, y1 = (y_c - h_half).long(), (y_c + h_half).long()
    w = (x1 - x0 + 1).clamp(min=1)
    h = (y1 - y0 + 1).clamp(min=1)
    im_h, im_w = img_shape
    n, size = padded.shape[0], padded.shape[-1]

    xs = torch.arange(im_w, device=boxes.device)[None, :] - x0[:, None]  # [N, im_w]: column inside the box
    ys = torch.arange(im_h, device=boxes.device)[None, :] - y0[:, None]
    inside = ((ys >= 0) & (ys < h[:, None]))[:, :, None] & ((xs >= 0) & (xs < w[:, None]))[:, None, :]
    xs = torch.minimum(xs.clamp(min=0), w[:, None] - 1)
    ys = torch.minimum(ys.clamp(min=0), h[:, None] - 1)
    ix0, ix1, wx0, wx1 = _source_index(xs, w[:, None], size)
    iy0, iy1, wy0, wy1 = _source_index(ys, h[:, None], size)

    def rows(index: Tensor) -> Tensor:
        return padded.gather(1, index[:, :, None].expand(n, im_h, size))

    def across(row: Tensor) -> Tensor:
        left = row.gather(2, ix0[:, None, :].expand(n, im_h, im_w))
        right = row.gather(2, ix1[:, None, :].expand(n, im_h, im_w))
        return left * wx0[:, None, :] + right * wx1[:, None, :]

    pasted = across(rows(iy0)) * wy0[:, :, None] + across(rows(iy1)) * wy1[:, :, None]
    return torch.where(inside, pasted, torch.zeros_like(pasted))[:, None]


def _cubic_weights(t: Tensor) -> List[Tensor]:
    # The four cubic-convolution weights (A = -0.75) of F.interpolate(mode="bicubic") at
    # fraction t, written as ATen writes them.
    a = -0.75

    def near(x: Tensor) -> Tensor:
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: Tensor) -> Tensor:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1.0), near(t), near(1.0 - t), far(1.0 - t + 1.0)]


def _bicubic_taps(dst: Tensor, out_size: Tensor, in_size: int) -> Tuple[List[Tensor], List[Tensor]]:
    # Source pixels and weights of F.interpolate(mode="bicubic", align_corners=False) for
    # output pixel `dst` of `out_size` pixels resized from `in_size`.
    scale = float(in_size) / out_size.float()
    src = scale * (dst.float() + 0.5) - 0.5
    i = src.floor().long().clamp(max=in_size - 1)
    t = (src - i).clamp(0, 1)
    return [(i + (j - 1)).clamp(0, in_size - 1) for j in range(4)], _cubic_weights(t)


def _heatmaps_to_keypoints(maps: Tensor, rois: Tensor) -> Tuple[Tensor, Tensor]:
    # torchvision's heatmaps_to_keypoints resizes each RoI's heatmaps (bicubic) to the RoI's
    # size in pixels, one RoI at a time, and takes each keypoint's argmax. Here all RoIs are
    # resized at once into the largest RoI's size; the pixels beyond an RoI's own size are
    # -inf, so the argmax (first maximum in row-major order, as torchvision's) is the same.
    offset_x, offset_y = rois[:, 0], rois[:, 1]
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    w = widths.ceil().long()
    h = heights.ceil().long()
    n, k, map_h, map_w = maps.shape
    one = torch.ones(1, dtype=torch.long, device=maps.device)
    max_w = torch.cat((w, one)).max().item()
    max_h = torch.cat((h, one)).max().item()
    torch._check(max_w >= 1)
    torch._check(max_h >= 1)

    xs = torch.minimum(torch.arange(max_w, device=maps.device)[None, :], w[:, None] - 1)  # [N, max_w]
    ys = torch.minimum(torch.arange(max_h, device=maps.device)[None, :], h[:, None] - 1)
    ix, wx = _bicubic_taps(xs, w[:, None], map_w)
    iy, wy = _bicubic_taps(ys, h[:, None], map_h)

    def tap_x(j: int) -> Tensor:
        index = ix[j][:, None, None, :].expand(n, k, map_h, max_w)
        return maps.gather(3, index) * wx[j][:, None, None, :]

    across = tap_x(0)
    for j in range(1, 4):
        across = across + tap_x(j)

    def tap_y(j: int) -> Tensor:
        index = iy[j][:, None, :, None].expand(n, k, max_h, max_w)
        return across.gather(2, index) * wy[j][:, None, :, None]

    resized = tap_y(0)
    for j in range(1, 4):
        resized = resized + tap_y(j)

    cols = torch.arange(max_w, device=maps.device)[None, :] < w[:, None]
    rows = torch.arange(max_h, device=maps.device)[None, :] < h[:, None]
    inside = (rows[:, :, None] & cols[:, None, :])[:, None]
    resized = torch.where(inside, resized, torch.full_like(resized, float("-inf")))
    pos = resized.reshape(n, k, max_h * max_w).argmax(dim=2)
    x_int = pos % max_w
    y_int = torch.div(pos - x_int, max_w, rounding_mode="floor")
    scores = resized.reshape(n, k, max_h * max_w).gather(2, pos[:, :, None])[:, :, 0]
    x = (x_int.float() + 0.5) * (widths / w)[:, None] + offset_x[:, None]
    y = (y_int.float() + 0.5) * (heights / h)[:, None] + offset_y[:, None]
    return torch.stack((x, y, torch.ones_like(x)), dim=2), scores


def _keypointrcnn_inference(x: Tensor, boxes: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
    kp_probs, kp_scores = [], []
    for maps, rois in zip(x.split([b.shape[0] for b in boxes], dim=0), boxes):
        probs, scores = _heatmaps_to_keypoints(maps, rois)
        kp_probs.append(probs)
        kp_scores.append(scores)
    return kp_probs, kp_scores


def _transform_postprocess(
    self,
    result: List[Dict[str, Tensor]],
    image_shapes: List[Tuple[int, int]],
    original_image_sizes: List[Tuple[int, int]],
) -> List[Dict[str, Tensor]]:
    # GeneralizedRCNNTransform.postprocess with the masks pasted by _paste_masks_in_image.
    from torchvision.models.detection.transform import resize_boxes, resize_keypoints

    if self.training:
        return result
    for pred, im_s, o_im_s in zip(result, image_shapes, original_image_sizes):
        pred["boxes"] = resize_boxes(pred["boxes"], im_s, o_im_s)
        if "masks" in pred:
            pred["masks"] = _paste_masks_in_image(pred["masks"], pred["boxes"], o_im_s)
        if "keypoints" in pred:
            pred["keypoints"] = resize_keypoints(pred["keypoints"], im_s, o_im_s)
    return result


def _topk_min(input: Tensor, orig_kval: int, axis: int):
    # torchvision's _topk_min takes Python's min() of k and a size: with a symbolic size that
    # is a guard fixing which one is smaller (per pyramid level, on the image size).
    return torch.sym_min(orig_kval, input.size(axis))


def _bind(module: nn.Module, name: str, fn) -> Tuple[nn.Module, str]:
    setattr(module, name, types.MethodType(fn, module))
    return module, name


def _bind_methods(model: nn.Module) -> List[Tuple[nn.Module, str]]:
    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    bound = []
    for module in model.modules():
        if isinstance(module, RoIHeads):
            bound.append(_bind(module, "postprocess_detections", _rcnn_postprocess_detections))
        elif isinstance(module, GeneralizedRCNNTransform):
            bound.append(_bind(module, "resize", _resize))
            bound.append(_bind(module, "batch_images", _batch_images))
            bound.append(_bind(module, "postprocess", _transform_postprocess))
    return bound


def _infer_pooler_scales(model: nn.Module) -> None:
    # MultiScaleRoIAlign infers its levels' scales on its first call, from feature and image
    # sizes: traced with symbolic sizes that inference becomes guards that pin the image
    # size. The scales are the backbone's strides, the same for every image, so infer them
    # here, eagerly, from one blank image of a size every level divides.
    import detops_fpn

    poolers = [m for m in model.modules() if isinstance(m, detops_fpn.MultiScaleRoIAlign) and m.scales is None]
    backbone = getattr(model, "backbone", None)
    if not poolers or backbone is None:
        return
    param = next(model.parameters())
    size = 256
    with torch.no_grad():
        features = backbone(torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device))
        for pooler in poolers:
            pooler(features, [torch.zeros(0, 4, dtype=param.dtype, device=param.device)], [(size, size)])


@contextlib.contextmanager
def exportable(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``model`` runs on detops, as in :func:`use_detops`, and the parts of
    torchvision's inference code that ``torch.export`` cannot trace with a dynamic image size
    are replaced by equivalents with the same results (see the module docstring). Parameters
    are untouched, and everything is restored on leaving the block.

    Args:
        model (nn.Module): a torchvision detection model (Faster, Mask or Keypoint R-CNN,
            RetinaNet, FCOS, ...) in eval mode.

    Yields:
        nn.Module: ``model`` itself, ready for ``torch.export.export`` with dynamic image
        sizes (:func:`export_detector` does that call). The program it gives holds only
        ``torch.ops.detops.*`` and aten ops: it converts to ONNX with ``detops.onnx.export``
        and compiles with AOTInductor (the Deployment page).
    """
    import torchvision.models.detection._utils as det_utils
    import torchvision.models.detection.roi_heads as roi_heads

    functions = [(roi_heads, "keypointrcnn_inference", _keypointrcnn_inference), (det_utils, "_topk_min", _topk_min)]
    with use_detops(model):
        _infer_pooler_scales(model)
        bound = _bind_methods(model)
        try:
            with patched(functions):
                yield model
        finally:
            for module, name in bound:
                delattr(module, name)


def export_detector(model: nn.Module, images: List[Tensor], **kwargs) -> "torch.export.ExportedProgram":
    """``torch.export.export(model, (images,), strict=False)`` under :func:`exportable`, with
    the height and width of every image dynamic.

    Args:
        model (nn.Module): a torchvision detection model in eval mode.
        images (List[Tensor[3, H, W]]): example input, as the eager model takes it: N float
            images with values in [0, 1], on the device the program is for.
        **kwargs: passed to ``torch.export.export`` (``dynamic_shapes`` and ``strict`` may
            be overridden).

    Returns:
        torch.export.ExportedProgram: takes a list of N such images (N fixed, sizes free) and
        returns what the eager model returns, a list of N dicts (``boxes``, ``labels``,
        ``scores``, and ``masks`` or ``keypoints``/``keypoints_scores``) in input-image
        pixels. ``detops.onnx.export`` converts it to ONNX (standard operators only);
        AOTInductor compiles it for C++ (the Deployment page).

    Raises:
        ValueError: the model is in training mode.
    """
    if model.training:
        raise ValueError("export_detector: the model must be in eval mode (call model.eval())")
    images = list(images)
    dim = torch.export.Dim.DYNAMIC
    kwargs.setdefault("dynamic_shapes", ([{1: dim, 2: dim} for _ in images],))
    kwargs.setdefault("strict", False)
    with exportable(model):
        return torch.export.export(model, (images,), **kwargs)
