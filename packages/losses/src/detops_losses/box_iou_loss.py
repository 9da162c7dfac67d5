"""generalized_box_iou_loss, distance_box_iou_loss and complete_box_iou_loss
(torchvision.ops.giou_loss / diou_loss / ciou_loss): the documented, TorchScript-able
wrappers of the native ops (csrc/box_iou_loss_*, per-pair math in core's
detops/box_pair_math.h).

Semantics are torchvision 0.29.1's, operation for operation: integer boxes are converted
to float32 and float16 / bfloat16 boxes computed in float32 (the loss is float32, as
torchvision's ``_upcast_non_float`` makes it); boxes of different shapes broadcast against
each other; the intersection counts only where both its sides are positive; the
reductions are ``"none"``, ``"mean"`` (0 for no boxes, as torchvision's ``0.0 * sum``) and
``"sum"``, computed in double in fixed chunks (bitwise repeatable, no atomics). Gradients
flow to both box sets through native backward ops (no double backward).
"""

from typing import Tuple

import torch
from torch import Tensor


def _prepare(boxes1: Tensor, boxes2: Tensor) -> Tuple[Tensor, Tensor]:
    if not boxes1.is_floating_point():
        boxes1 = boxes1.float()
    if not boxes2.is_floating_point():
        boxes2 = boxes2.float()
    if boxes1.shape != boxes2.shape:
        # Expanded views: autograd sums the gradient of a broadcast box over its copies.
        expanded = torch.broadcast_tensors(boxes1, boxes2)
        boxes1, boxes2 = expanded[0], expanded[1]
    return boxes1, boxes2


def generalized_box_iou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """GIoU loss of aligned pairs of ``(x1, y1, x2, y2)`` boxes (Rezatofighi et al. 2019):
    ``1 - (iou - (area_c - union) / (area_c + eps))`` with ``iou = inter / (union + eps)``
    and ``area_c`` the smallest enclosing box's area.

    Args:
        boxes1 (Tensor[..., 4]): first boxes; float32 or float64, float16 / bfloat16
            (computed in float32), integer (converted to float32).
        boxes2 (Tensor[..., 4]): second boxes, broadcastable against boxes1, same device.
        reduction (str): ``"none"`` | ``"mean"`` | ``"sum"``. Default ``"none"``.
        eps (float): added to the denominators. Default 1e-7.

    Returns:
        Tensor: the loss of each pair (``[...]``) or its mean / sum (0-dim); float32 for
        float16, bfloat16 or integer boxes.

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward; repeatable
    (bitwise identical on every run) on both, the reductions summed in double in fixed
    chunks. Exports to ONNX as the same element-wise standard operators, ``"mean"`` and
    ``"sum"`` as ``ReduceSum`` (they agree with eager to the compute type's rounding);
    reduction and eps are fixed in the graph.
    """
    boxes1, boxes2 = _prepare(boxes1, boxes2)
    return torch.ops.detops.generalized_box_iou_loss(boxes1, boxes2, reduction, eps)


def distance_box_iou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """DIoU loss of aligned pairs of ``(x1, y1, x2, y2)`` boxes (Zheng et al. 2020):
    ``1 - iou + d^2 / (c^2 + eps)`` with ``iou = inter / (union + eps)``, ``d`` the distance
    of the centres and ``c`` the enclosing box's diagonal.

    Args:
        boxes1 (Tensor[..., 4]): first boxes; float32 or float64, float16 / bfloat16
            (computed in float32), integer (converted to float32).
        boxes2 (Tensor[..., 4]): second boxes, broadcastable against boxes1, same device.
        reduction (str): ``"none"`` | ``"mean"`` | ``"sum"``. Default ``"none"``.
        eps (float): added to the denominators. Default 1e-7.

    Returns:
        Tensor: the loss of each pair (``[...]``) or its mean / sum (0-dim); float32 for
        float16, bfloat16 or integer boxes.

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward; repeatable
    (bitwise identical on every run) on both, the reductions summed in double in fixed
    chunks. Exports to ONNX as the same element-wise standard operators, ``"mean"`` and
    ``"sum"`` as ``ReduceSum`` (they agree with eager to the compute type's rounding);
    reduction and eps are fixed in the graph.
    """
    boxes1, boxes2 = _prepare(boxes1, boxes2)
    return torch.ops.detops.distance_box_iou_loss(boxes1, boxes2, reduction, eps)


def complete_box_iou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """CIoU loss of aligned pairs of ``(x1, y1, x2, y2)`` boxes (Zheng et al. 2020):
    the DIoU loss plus ``alpha * v`` with ``v = 4 / pi^2 (atan(w2 / h2) - atan(w1 / h1))^2``
    and ``alpha = v / (1 - iou + v + eps)``, a constant to the gradient (torchvision computes
    it under no_grad). As in torchvision, the DIoU part always uses eps 1e-7 (it is called
    without ``eps``); ``eps`` enters alpha only. In float32 the atan is detops' own (a
    branch-free polynomial, so the CPU loop over pairs vectorises), within 2 units in the last
    place of the exact value where torch's is within 1: the loss agrees with torchvision's to
    float32 rounding, not bit for bit.

    Args:
        boxes1 (Tensor[..., 4]): first boxes; float32 or float64, float16 / bfloat16
            (computed in float32), integer (converted to float32).
        boxes2 (Tensor[..., 4]): second boxes, broadcastable against boxes1, same device.
        reduction (str): ``"none"`` | ``"mean"`` | ``"sum"``. Default ``"none"``.
        eps (float): added to alpha's denominator. Default 1e-7.

    Returns:
        Tensor: the loss of each pair (``[...]``) or its mean / sum (0-dim); float32 for
        float16, bfloat16 or integer boxes.

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward; repeatable
    (bitwise identical on every run) on both, the reductions summed in double in fixed
    chunks. Exports to ONNX as the same element-wise standard operators, ``"mean"`` and
    ``"sum"`` as ``ReduceSum`` (they agree with eager to the compute type's rounding);
    reduction and eps are fixed in the graph.
    ``Atan`` may differ from eager in the last place.
    """
    boxes1, boxes2 = _prepare(boxes1, boxes2)
    return torch.ops.detops.complete_box_iou_loss(boxes1, boxes2, reduction, eps)
