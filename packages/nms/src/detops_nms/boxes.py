"""Box utilities used next to NMS, with torchvision.ops semantics: plain PyTorch, except the
pairwise GIoU / DIoU / CIoU (generalized_box_iou, distance_box_iou, complete_box_iou), which
are native ops with native backward ops (``torch.ops.detops.<name>``).

Axis-aligned formats ``'xyxy'``, ``'xywh'``, ``'cxcywh'`` and torchvision's rotated formats
``'xywhr'``, ``'cxcywhr'`` (r in degrees, counter-clockwise as seen on an image whose y axis
points down) and ``'xyxyxyxy'`` (the four corners, starting at the top-left one of the
unrotated box and going through top-right, bottom-right, bottom-left). Conversions within
each family give torchvision 0.29.1's results bit for bit; between the families there is
none (NotImplementedError, as in torchvision).
"""

import math
from typing import List, Tuple

import torch
from torch import Tensor


def _upcast(t: Tensor) -> Tensor:
    # Products of coordinates overflow narrow types: float16 -> float32, int8/16 -> int32.
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def _check_format(fmt: str, what: str) -> None:
    # Tuple literals, not module constants: TorchScript cannot read module-level tuples.
    if fmt not in ("xyxy", "xywh", "cxcywh", "xywhr", "cxcywhr", "xyxyxyxy"):
        raise ValueError(
            what + ": unsupported box format '" + fmt + "'; expected 'xyxy', 'xywh', 'cxcywh' "
            "or one of the rotated formats 'xywhr', 'cxcywhr', 'xyxyxyxy'"
        )


def _is_rotated(fmt: str) -> bool:
    return fmt in ("xywhr", "cxcywhr", "xyxyxyxy")


def _check_axis_aligned(fmt: str, what: str) -> None:
    _check_format(fmt, what)
    if _is_rotated(fmt):
        raise NotImplementedError(
            what + ": rotated box format '" + fmt + "' is not supported here; "
            "use box_iou_rotated for rotated boxes in 'cxcywhr' format"
        )


# The rotated conversions repeat torchvision's arithmetic operation for operation (same
# association, same dtype promotion, integer boxes rounded and cast back), because users
# compare converted boxes bit for bit; the geometry is the box's two unit axes,
# u = (cos r, -sin r) along the width and v = (sin r, cos r) along the height.
def _rounded_like(out: Tensor, like: Tensor) -> Tensor:
    if like.is_floating_point():
        return out
    return out.round().to(like.dtype)


def _angle_cos_sin(r: Tensor) -> Tuple[Tensor, Tensor]:
    rad = r * math.pi / 180.0
    return torch.cos(rad), torch.sin(rad)


def _cxcywhr_to_xywhr(boxes: Tensor) -> Tensor:
    cx, cy, w, h, r = boxes.unbind(-1)
    cos, sin = _angle_cos_sin(r)
    x1 = cx - w / 2 * cos - h / 2 * sin
    y1 = cy - h / 2 * cos + w / 2 * sin
    return _rounded_like(torch.stack((x1, y1, w, h, r), dim=-1), boxes)


def _xywhr_to_cxcywhr(boxes: Tensor) -> Tensor:
    x1, y1, w, h, r = boxes.unbind(-1)
    cos, sin = _angle_cos_sin(r)
    cx = x1 + w / 2 * cos + h / 2 * sin
    cy = y1 - w / 2 * sin + h / 2 * cos
    return _rounded_like(torch.stack((cx, cy, w, h, r), dim=-1), boxes)


def _xywhr_to_xyxyxyxy(boxes: Tensor) -> Tensor:
    x1, y1, w, h, r = boxes.unbind(-1)
    cos, sin = _angle_cos_sin(r)
    x2 = x1 + w * cos
    y2 = y1 - w * sin
    x3 = x2 + h * sin
    y3 = y2 + h * cos
    x4 = x1 + h * sin
    y4 = y1 + h * cos
    return _rounded_like(torch.stack((x1, y1, x2, y2, x3, y3, x4, y4), dim=-1), boxes)


def _xyxyxyxy_to_xywhr(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2, x3, y3, x4, y4 = boxes.unbind(-1)
    r = torch.atan2(y1 - y2, x2 - x1) * 180 / math.pi
    w = ((x2 - x1) ** 2 + (y1 - y2) ** 2).sqrt()
    h = ((x3 - x2) ** 2 + (y3 - y2) ** 2).sqrt()
    return _rounded_like(torch.stack((x1, y1, w, h, r), dim=-1), boxes)


def _check_rotated_width(boxes: Tensor, fmt: str, what: str) -> None:
    width = 8 if fmt == "xyxyxyxy" else 5
    if boxes.dim() == 0 or boxes.shape[-1] != width:
        raise ValueError(
            what
            + ": boxes in format '"
            + fmt
            + "' must have "
            + str(width)
            + " numbers in the last dimension, got shape "
            + str(list(boxes.shape))
        )


def _convert_rotated(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    _check_rotated_width(boxes, in_fmt, "box_convert")
    if in_fmt == "cxcywhr":
        boxes = _cxcywhr_to_xywhr(boxes)
    elif in_fmt == "xyxyxyxy":
        boxes = _xyxyxyxy_to_xywhr(boxes)
    if out_fmt == "cxcywhr":
        boxes = _xywhr_to_cxcywhr(boxes)
    elif out_fmt == "xyxyxyxy":
        boxes = _xywhr_to_xyxyxyxy(boxes)
    return boxes


def _cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def _xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def _xywh_to_xyxy(boxes: Tensor) -> Tensor:
    x, y, w, h = boxes.unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


def _xyxy_to_xywh(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``boxes`` (Tensor[..., K]) from ``in_fmt`` to ``out_fmt``, both axis-aligned
    (K = 4): ``'xyxy'`` (corners), ``'xywh'`` (top-left corner, width, height),
    ``'cxcywh'`` (centre, width, height); or both rotated: ``'xywhr'`` (K = 5, first corner,
    width, height, r), ``'cxcywhr'`` (K = 5, centre, width, height, r) and ``'xyxyxyxy'``
    (K = 8, the four corners). r is in degrees, counter-clockwise on an image with y
    pointing down. Same format in and out returns a copy; an axis-aligned format to a
    rotated one (or back) raises NotImplementedError, as in torchvision.

    Args:
        boxes (Tensor[..., K]): the boxes (K = 4, 5 or 8 as ``in_fmt`` needs).
        in_fmt (str): their format.
        out_fmt (str): the format wanted.

    Returns:
        Tensor[..., K']: the converted boxes (K' the output format's width); floating boxes
        keep their dtype.

    Devices, determinism, ONNX: plain torch operations (no native kernel), so it runs on
    any device torch supports (CPU, CUDA, ...), gives repeatable results (bitwise identical
    on every run), and exports to ONNX through torch's own exporter like any torch code.
    """
    _check_format(in_fmt, "box_convert in_fmt")
    _check_format(out_fmt, "box_convert out_fmt")
    if in_fmt == out_fmt:
        return boxes.clone()
    if _is_rotated(in_fmt) or _is_rotated(out_fmt):
        if not (_is_rotated(in_fmt) and _is_rotated(out_fmt)):
            raise NotImplementedError(
                "box_convert: no conversion between the axis-aligned format '"
                + (out_fmt if _is_rotated(in_fmt) else in_fmt)
                + "' and the rotated format '"
                + (in_fmt if _is_rotated(in_fmt) else out_fmt)
                + "'"
            )
        return _convert_rotated(boxes, in_fmt, out_fmt)
    if in_fmt == "xywh":
        boxes = _xywh_to_xyxy(boxes)
    elif in_fmt == "cxcywh":
        boxes = _cxcywh_to_xyxy(boxes)
    if out_fmt == "xywh":
        boxes = _xyxy_to_xywh(boxes)
    elif out_fmt == "cxcywh":
        boxes = _xyxy_to_cxcywh(boxes)
    return boxes


def box_area(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    """Area of each box in ``boxes`` (Tensor[..., K]) given in format ``fmt``; narrow
    dtypes are upcast (float16 -> float32, small ints -> int32) before multiplying.

    Rotated formats (a detops addition: torchvision 0.29.1 refuses them here): ``w * h`` for
    ``'xywhr'`` and ``'cxcywhr'``, the shoelace area of the quadrilateral for
    ``'xyxyxyxy'`` (its absolute value, so either corner order gives the same area).

    Args:
        boxes (Tensor[..., K]): the boxes (K = 4, 5 or 8 as ``fmt`` needs), any real dtype.
        fmt (str): ``'xyxy'`` (default), ``'xywh'``, ``'cxcywh'``, ``'xywhr'``,
            ``'cxcywhr'`` or ``'xyxyxyxy'``.

    Returns:
        Tensor[...]: the areas; float32 / float64 / int32 / int64 (narrower inputs upcast
        as above).

    Devices, determinism, ONNX: plain torch operations (no native kernel), so it runs on
    any device torch supports (CPU, CUDA, ...), gives repeatable results (bitwise identical
    on every run), and exports to ONNX through torch's own exporter like any torch code.
    """
    _check_format(fmt, "box_area fmt")
    if _is_rotated(fmt):
        _check_rotated_width(boxes, fmt, "box_area")
    boxes = _upcast(boxes)
    if fmt == "xyxyxyxy":
        x = boxes[..., 0::2]
        y = boxes[..., 1::2]
        cross = x * y.roll(-1, -1) - x.roll(-1, -1) * y
        return cross.sum(-1).abs() / 2
    if fmt in ("xywhr", "cxcywhr"):
        return boxes[..., 2] * boxes[..., 3]
    if fmt == "xyxy":
        return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return boxes[..., 2] * boxes[..., 3]


def _inter_union(boxes1: Tensor, boxes2: Tensor, fmt: str) -> Tuple[Tensor, Tensor]:
    area1 = box_area(boxes1, fmt=fmt)
    area2 = box_area(boxes2, fmt=fmt)
    if fmt == "xyxy":
        lo1, hi1 = boxes1[..., None, :2], boxes1[..., None, 2:]
        lo2, hi2 = boxes2[..., None, :, :2], boxes2[..., None, :, 2:]
    elif fmt == "xywh":
        lo1 = boxes1[..., None, :2]
        hi1 = boxes1[..., None, :2] + boxes1[..., None, 2:]
        lo2 = boxes2[..., None, :, :2]
        hi2 = boxes2[..., None, :, :2] + boxes2[..., None, :, 2:]
    else:
        lo1 = boxes1[..., None, :2] - boxes1[..., None, 2:] / 2
        hi1 = boxes1[..., None, :2] + boxes1[..., None, 2:] / 2
        lo2 = boxes2[..., None, :, :2] - boxes2[..., None, :, 2:] / 2
        hi2 = boxes2[..., None, :, :2] + boxes2[..., None, :, 2:] / 2
    wh = _upcast(torch.min(hi1, hi2) - torch.max(lo1, lo2)).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., None] + area2[..., None, :] - inter
    return inter, union


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Pairwise intersection-over-union: Tensor[..., N, M] for boxes1 Tensor[..., N, 4] and
    boxes2 Tensor[..., M, 4], both in format ``fmt``.

    Args:
        boxes1 (Tensor[..., N, 4]): first boxes; float16 and bfloat16 are upcast to float32.
        boxes2 (Tensor[..., M, 4]): second boxes, leading dimensions broadcast with boxes1.
        fmt (str): ``'xyxy'`` (default), ``'xywh'`` or ``'cxcywh'``.

    Returns:
        Tensor[..., N, M]: the IoU of every pair (float32 for float16 / bfloat16 boxes).

    Devices, determinism, ONNX: plain torch operations (no native kernel), so it runs on
    any device torch supports (CPU, CUDA, ...), gives repeatable results (bitwise identical
    on every run), and exports to ONNX through torch's own exporter like any torch code.
    """
    _check_axis_aligned(fmt, "box_iou fmt")
    inter, union = _inter_union(boxes1, boxes2, fmt)
    return inter / union


def clip_boxes_to_image(boxes: Tensor, size: Tuple[int, int]) -> Tensor:
    """Clamp ``(x1, y1, x2, y2)`` boxes (Tensor[..., 4]) to an image of size
    ``(height, width)``: x into [0, width], y into [0, height].

    Args:
        boxes (Tensor[..., 4]): ``(x1, y1, x2, y2)`` boxes, any real dtype.
        size (Tuple[int, int]): the image's ``(height, width)``.

    Returns:
        Tensor[..., 4]: the clamped boxes, same shape and dtype.

    Devices, determinism, ONNX: plain torch operations (no native kernel), so it runs on
    any device torch supports (CPU, CUDA, ...), gives repeatable results (bitwise identical
    on every run), and exports to ONNX through torch's own exporter like any torch code.
    """
    height, width = size
    xs = boxes[..., 0::2].clamp(min=0, max=width)
    ys = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((xs, ys), dim=boxes.dim()).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (int64, ascending) of the ``(x1, y1, x2, y2)`` boxes whose width and height
    are both at least ``min_size``.

    Args:
        boxes (Tensor[N, 4]): ``(x1, y1, x2, y2)`` boxes, any real dtype.
        min_size (float): the smallest width and height kept.

    Returns:
        Tensor[K] (int64): indices of the boxes kept, ascending.

    Devices, determinism, ONNX: plain torch operations (no native kernel), so it runs on
    any device torch supports (CPU, CUDA, ...), gives repeatable results (bitwise identical
    on every run), and exports to ONNX through torch's own exporter like any torch code.
    """
    ws = boxes[..., 2] - boxes[..., 0]
    hs = boxes[..., 3] - boxes[..., 1]
    return torch.where((ws >= min_size) & (hs >= min_size))[0]


def masks_to_boxes(masks: Tensor) -> Tensor:
    """The tightest ``(x1, y1, x2, y2)`` box around each mask of ``masks`` Tensor[N, H, W]
    (any dtype; nonzero is inside): Tensor[N, 4], float32, on the masks' device, with
    inclusive pixel indices (x2 - x1 = 0 for a one-column mask). An empty mask gives
    ``[0, 0, 0, 0]``; masks with no elements at all give an empty Tensor[0, 4] (as in
    torchvision, whatever N).

    Args:
        masks (Tensor[N, H, W]): the masks, any dtype.

    Returns:
        Tensor[N, 4] (float32): one box per mask.

    Raises:
        ValueError: masks with elements that are not 3-dimensional.

    Devices, determinism, ONNX: plain torch operations (no native kernel), so it runs on
    any device torch supports (CPU, CUDA, ...), gives repeatable results (bitwise identical
    on every run), and exports to ONNX through torch's own exporter like any torch code.
    """
    if masks.numel() == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=masks.device)
    if masks.dim() != 3:
        raise ValueError(f"masks_to_boxes: masks must be Tensor[N, H, W], got {masks.dim()} dimensions")
    inside = masks != 0  # as masks.bool(), NaN included; TorchScript has no Tensor.bool()
    rows = inside.any(dim=2)  # [N, H]: the rows the mask touches
    cols = inside.any(dim=1)  # [N, W]
    height, width = masks.shape[1], masks.shape[2]
    ys = torch.arange(height, device=masks.device)
    xs = torch.arange(width, device=masks.device)
    # First and last touched index: the min / max over touched indices, with untouched ones
    # replaced by a value that cannot win.
    y1 = torch.where(rows, ys, height).amin(dim=1)
    y2 = torch.where(rows, ys, -1).amax(dim=1)
    x1 = torch.where(cols, xs, width).amin(dim=1)
    x2 = torch.where(cols, xs, -1).amax(dim=1)
    boxes = torch.stack((x1, y1, x2, y2), dim=1).to(torch.float32)
    return torch.where(rows.any(dim=1).unsqueeze(1), boxes, torch.zeros_like(boxes))


# Pairwise GIoU / DIoU / CIoU: native ops (csrc/box_pair_*, core's detops/box_pair_math.h).
# Values and gradients are torchvision 0.29.1's formulas operation for operation (float16 /
# bfloat16 boxes give a float32 result, as there). The native ops take boxes1 [N, 4] and
# boxes2 [M, 4]; leading batch dimensions (broadcast, as torchvision's) run one native call
# per batch element.


def _batch_of(boxes1: Tensor, boxes2: Tensor) -> Tuple[Tensor, Tensor, List[int]]:
    """boxes1 [..., N, 4] and boxes2 [..., M, 4] as [B, N, 4] and [B, M, 4] over their
    broadcast leading shape, and that shape."""
    lead = list(torch.broadcast_tensors(boxes1[..., :1, 0], boxes2[..., :1, 0])[0].shape[:-1])
    n, m = boxes1.shape[-2], boxes2.shape[-2]
    a = boxes1.expand(lead + [n, 4]).reshape(-1, n, 4)
    b = boxes2.expand(lead + [m, 4]).reshape(-1, m, 4)
    return a, b, lead


def _stacked(rows: List[Tensor], none: Tensor, lead: List[int], n: int, m: int) -> Tensor:
    # `none`: the op on no boxes, for the result's dtype when the batch is empty.
    out = torch.stack(rows) if len(rows) > 0 else none.new_empty([0, n, m])
    return out.reshape(lead + [n, m])


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU, Tensor[..., N, M], of ``(x1, y1, x2, y2)`` boxes1
    Tensor[..., N, 4] and boxes2 Tensor[..., M, 4]: ``iou - (area_c - union) / area_c`` with
    ``area_c`` the area of the smallest enclosing box. float16 / bfloat16 boxes give float32
    (torchvision's upcast; the coordinates' differences are rounded to the boxes' dtype
    first, as there). Differentiable with respect to both (native backward).

    Args:
        boxes1 (Tensor[..., N, 4]): first boxes; float16, bfloat16, float32 or float64
            (integer boxes raise a RuntimeError).
        boxes2 (Tensor[..., M, 4]): second boxes, same dtype and device; leading
            dimensions broadcast with boxes1.

    Returns:
        Tensor[..., N, M]: the GIoU of every pair (float32 for float16 / bfloat16 boxes).

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward (native
    gradients for both box sets); forward and backward are repeatable (bitwise identical on
    every run) on both devices. Exports to ONNX as the same sequence of element-wise
    standard operators (``Where`` for the NaN-propagating max / min), exact per pair.
    """
    if boxes1.dim() <= 2 and boxes2.dim() <= 2:
        return torch.ops.detops.generalized_box_iou(boxes1, boxes2)
    a, b, lead = _batch_of(boxes1, boxes2)
    rows = [torch.ops.detops.generalized_box_iou(a[i], b[i]) for i in range(a.shape[0])]
    none = torch.ops.detops.generalized_box_iou(a.reshape(-1, 4)[:0], b.reshape(-1, 4)[:0])
    return _stacked(rows, none, lead, a.shape[1], b.shape[1])


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise distance IoU, Tensor[..., N, M]: ``iou - d^2 / (c^2 + eps)`` with ``d`` the
    distance of the boxes' centres and ``c`` the diagonal of the smallest enclosing box.
    Computed in float32 for float16 / bfloat16 boxes (result float32), as in torchvision.

    Args:
        boxes1 (Tensor[..., N, 4]): first boxes; float16, bfloat16, float32 or float64.
        boxes2 (Tensor[..., M, 4]): second boxes, same dtype and device; leading
            dimensions broadcast with boxes1.
        eps (float): added to ``c^2``. Default: 1e-7.

    Returns:
        Tensor[..., N, M]: the DIoU of every pair.

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward (native
    gradients for both box sets); forward and backward are repeatable (bitwise identical on
    every run) on both devices. Exports to ONNX as the same sequence of element-wise
    standard operators (``Where`` for the NaN-propagating max / min), exact per pair.
    """
    if boxes1.dim() <= 2 and boxes2.dim() <= 2:
        return torch.ops.detops.distance_box_iou(boxes1, boxes2, eps)
    a, b, lead = _batch_of(boxes1, boxes2)
    rows = [torch.ops.detops.distance_box_iou(a[i], b[i], eps) for i in range(a.shape[0])]
    none = torch.ops.detops.distance_box_iou(a.reshape(-1, 4)[:0], b.reshape(-1, 4)[:0], eps)
    return _stacked(rows, none, lead, a.shape[1], b.shape[1])


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise complete IoU, Tensor[..., N, M]: ``diou - alpha * v`` with
    ``v = 4 / pi^2 (atan(w1 / h1) - atan(w2 / h2))^2`` and
    ``alpha = v / (1 - iou + v + eps)``; as in torchvision, alpha is a constant to the
    gradient (computed under no_grad). float16 / bfloat16 boxes give float32. In float32
    the atan is detops' own (a branch-free polynomial, so the CPU loop over pairs
    vectorises), within 2 units in the last place of the exact value where torch's is within
    1: values agree with torchvision's to float32 rounding, not bit for bit.

    Args:
        boxes1 (Tensor[..., N, 4]): first boxes; float16, bfloat16, float32 or float64.
        boxes2 (Tensor[..., M, 4]): second boxes, same dtype and device; leading
            dimensions broadcast with boxes1.
        eps (float): added to the denominators. Default: 1e-7.

    Returns:
        Tensor[..., N, M]: the CIoU of every pair.

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward (native
    gradients for both box sets); forward and backward are repeatable (bitwise identical on
    every run) on both devices. Exports to ONNX as the same sequence of element-wise
    standard operators (``Where`` for the NaN-propagating max / min), exact per pair but for ``Atan``,
    which ONNX Runtime may round differently in the last place.
    """
    if boxes1.dim() <= 2 and boxes2.dim() <= 2:
        return torch.ops.detops.complete_box_iou(boxes1, boxes2, eps)
    a, b, lead = _batch_of(boxes1, boxes2)
    rows = [torch.ops.detops.complete_box_iou(a[i], b[i], eps) for i in range(a.shape[0])]
    none = torch.ops.detops.complete_box_iou(a.reshape(-1, 4)[:0], b.reshape(-1, 4)[:0], eps)
    return _stacked(rows, none, lead, a.shape[1], b.shape[1])
