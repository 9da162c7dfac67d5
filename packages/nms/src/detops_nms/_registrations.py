"""What the NMS ops register with torch besides their kernels: fake kernels (output shapes
for torch.compile and torch.export), autocast, and nms's kernel for quantized CPU tensors. The native entry points
(csrc/nms_checks.h, csrc/nms_rotated_checks.h) own the argument checks.
The NMS ops have no gradient: the outputs are integer indices (and soft-NMS's scores,
which are not differentiated). The pairwise generalized_box_iou, distance_box_iou and
complete_box_iou differentiate with respect to both box sets through their native backward
ops, which have no derivative of their own."""

import torch

from detops_core.autocast import register_autocast_float32
from detops_core.autograd import forbid_double_backward, register_autograd
from detops_core.fake import one_device, size

from . import _library  # noqa: F401  (the ops must exist before we register against them)


def _kept(op, boxes, scores, idxs=None, at_most=None, max_output=None, columns=()):
    """int64 indices of the kept boxes: how many survive depends on the data, an unbacked
    size between 0 and `at_most` (default: the number of boxes) and `max_output`."""
    one_device(op, boxes=boxes, scores=scores, idxs=idxs)
    kept = torch.library.get_ctx().new_dynamic_size()
    torch._check(kept <= (size(boxes, 0) if at_most is None else at_most))
    if max_output is not None and max_output >= 0:  # a negative one is the native op's error
        torch._check(kept <= max_output)
    return boxes.new_empty((kept, *columns), dtype=torch.int64)


@torch.library.register_fake("detops::nms")
def _nms_fake(boxes, scores, iou_threshold, max_output=None):
    return _kept("detops.nms", boxes, scores, max_output=max_output)


@torch.library.register_fake("detops::batched_nms")
def _batched_nms_fake(boxes, scores, idxs, iou_threshold, max_output=None):
    return _kept("detops.batched_nms", boxes, scores, idxs, max_output=max_output)


@torch.library.register_fake("detops::nms_per_image")
def _nms_per_image_fake(boxes, scores, idxs, iou_threshold, max_output=None):
    images, boxes_per_image = size(boxes, 0), size(boxes, 1)
    limit = None if max_output is None else images * max_output  # at most max_output per image
    return _kept(
        "detops.nms_per_image", boxes, scores, idxs, at_most=images * boxes_per_image, max_output=limit, columns=(2,)
    )


def _soft_nms_fake(op, boxes, scores, idxs=None):
    keep = _kept(op, boxes, scores, idxs)
    return keep, scores.new_empty(keep.shape)


@torch.library.register_fake("detops::soft_nms")
def _soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, score_threshold=0.001, method="gaussian"):
    return _soft_nms_fake("detops.soft_nms", boxes, scores)


@torch.library.register_fake("detops::batched_soft_nms")
def _batched_soft_nms(boxes, scores, idxs, iou_threshold=0.3, sigma=0.5, score_threshold=0.001, method="gaussian"):
    return _soft_nms_fake("detops.batched_soft_nms", boxes, scores, idxs)


@torch.library.register_fake("detops::box_iou_rotated")
def _box_iou_rotated_fake(boxes1, boxes2):
    one_device("detops.box_iou_rotated", boxes1=boxes1, boxes2=boxes2)
    return boxes1.new_empty((size(boxes1, 0), size(boxes2, 0)))


@torch.library.register_fake("detops::nms_rotated")
def _nms_rotated_fake(boxes, scores, iou_threshold):
    return _kept("detops.nms_rotated", boxes, scores)


@torch.library.register_fake("detops::batched_nms_rotated")
def _batched_nms_rotated_fake(boxes, scores, idxs, iou_threshold):
    return _kept("detops.batched_nms_rotated", boxes, scores, idxs)


# Under autocast, float16/bfloat16 boxes and scores are computed in float32 (IoU of large
# coordinates overflows float16; the rotated kernels compute in float64 from whatever they
# get, and float32 keeps the IoU's rounding off float16's grid); soft-NMS's decayed scores
# and the rotated IoU matrix come back in the input's dtype, indices as they are.
_OPS = ("nms", "batched_nms", "nms_per_image", "soft_nms", "batched_soft_nms")
for _op in (*_OPS, "box_iou_rotated", "nms_rotated", "batched_nms_rotated"):
    register_autocast_float32(f"detops::{_op}")


# nms of quantized CPU boxes and scores, as torchvision 0.29.1 computes it (its wrapper sends
# their integer representations to qnms): the rank of a score and the IoU of two boxes are
# those of the raw integers, whatever the scales and zero points, the IoU in float32. That
# is detops::nms of the integers as float32, exact while they are below 2^24 in magnitude
# (always for quint8 and qint8; for qint32 it is checked). Registered only where torch
# still has quantized dtypes; the registration lives as long as _quantized_lib.
_QUANTIZED = [getattr(torch, name) for name in ("quint8", "qint8", "qint32") if hasattr(torch, name)]
_quantized_lib = torch.library.Library("detops", "FRAGMENT")


def _quantized_nms(boxes, scores, iou_threshold, max_output=None):
    raw = []
    for name, t in (("boxes", boxes), ("scores", scores)):
        if t.dtype not in _QUANTIZED:
            raise RuntimeError(
                f"detops.nms: quantized boxes and scores must both be one of {', '.join(map(str, _QUANTIZED))}, "
                f"got {name} of dtype {t.dtype}"
            )
        r = t.int_repr()
        if r.numel() > 0 and r.to(torch.int64).abs().max() >= 2**24:
            raise RuntimeError(
                f"detops.nms: quantized {name} holds integers of 2^24 or more, which float32 cannot hold"
            )
        raw.append(r.to(torch.float32))
    if boxes.dtype != scores.dtype:
        raise RuntimeError(
            f"detops.nms: boxes and scores must have the same dtype, got {boxes.dtype} and {scores.dtype}"
        )
    return torch.ops.detops.nms(raw[0], raw[1], iou_threshold, max_output)


if _QUANTIZED:
    _quantized_lib.impl("nms", _quantized_nms, "QuantizedCPU")


# ----------------------------------------------------------------------------- box pairs
# No autocast kernel for these: float16 / bfloat16 boxes are computed in float32 natively and
# the result stays float32, torchvision's result under autocast too (its Python formulas
# upcast and autocast leaves element-wise ops alone); an autocast kernel would cast it back.
_NARROW = (torch.float16, torch.bfloat16)
_BOX_PAIR = ("generalized_box_iou", "distance_box_iou", "complete_box_iou")


def _pair_result(op, boxes1, boxes2):
    one_device(op, boxes1=boxes1, boxes2=boxes2)
    dtype = torch.float32 if boxes1.dtype in _NARROW else boxes1.dtype
    return boxes1.new_empty((size(boxes1, 0), size(boxes2, 0)), dtype=dtype)


def _pair_grads(op, grad, boxes1, boxes2):
    one_device(op, boxes1=boxes1, boxes2=boxes2, grad=grad)
    return boxes1.new_empty((size(boxes1, 0), 4)), boxes2.new_empty((size(boxes2, 0), 4))


@torch.library.register_fake("detops::generalized_box_iou")
def _generalized_box_iou_fake(boxes1, boxes2):
    return _pair_result("detops.generalized_box_iou", boxes1, boxes2)


@torch.library.register_fake("detops::distance_box_iou")
def _distance_box_iou_fake(boxes1, boxes2, eps=1e-7):
    return _pair_result("detops.distance_box_iou", boxes1, boxes2)


@torch.library.register_fake("detops::complete_box_iou")
def _complete_box_iou_fake(boxes1, boxes2, eps=1e-7):
    return _pair_result("detops.complete_box_iou", boxes1, boxes2)


@torch.library.register_fake("detops::_generalized_box_iou_backward")
def _generalized_box_iou_backward_fake(grad, boxes1, boxes2):
    return _pair_grads("detops._generalized_box_iou_backward", grad, boxes1, boxes2)


@torch.library.register_fake("detops::_distance_box_iou_backward")
def _distance_box_iou_backward_fake(grad, boxes1, boxes2, eps):
    return _pair_grads("detops._distance_box_iou_backward", grad, boxes1, boxes2)


@torch.library.register_fake("detops::_complete_box_iou_backward")
def _complete_box_iou_backward_fake(grad, boxes1, boxes2, eps):
    return _pair_grads("detops._complete_box_iou_backward", grad, boxes1, boxes2)


def _box_pair_grads(name):
    backward = getattr(torch.ops.detops, f"_{name}_backward")

    def grads(args, grad):
        extra = () if name == "generalized_box_iou" else (args.eps,)
        grad1, grad2 = backward(grad, args.boxes1, args.boxes2, *extra)
        return {"boxes1": grad1, "boxes2": grad2}

    return grads


for _name in _BOX_PAIR:
    register_autograd(f"detops::{_name}", _box_pair_grads(_name), save=("boxes1", "boxes2"))
    forbid_double_backward(f"detops::_{_name}_backward", f"detops.{_name}")
