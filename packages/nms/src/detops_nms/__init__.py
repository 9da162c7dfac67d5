"""detops-nms: non-maximum suppression with torchvision.ops semantics, and the variants
detection pipelines need: soft-NMS, a limit on kept boxes, many images in one call.

``nms`` and ``batched_nms`` run native CPU and CUDA kernels registered as
``torch.ops.detops.nms`` and ``torch.ops.detops.batched_nms``; ``soft_nms``,
``batched_soft_nms`` and ``nms_per_image`` as ``torch.ops.detops.<name>``, as do the
differentiable pairwise ``generalized_box_iou``, ``distance_box_iou`` and
``complete_box_iou``. All script with
TorchScript, trace under ``torch.compile(fullgraph=True)`` and ``torch.export``, and
compute float16/bfloat16 inputs in float32.

Defined behaviour on unusual input (identical to torchvision's CPU kernel):

- scores are ranked by a stable descending sort: NaN scores rank first, equal scores keep
  their input order;
- a box with a NaN coordinate has NaN area, so its IoU with every box is NaN: it is never
  suppressed and never suppresses;
- an IoU exactly equal to ``iou_threshold`` does not suppress;
- empty input returns an empty int64 tensor; ``batched_nms`` of boxes with no elements
  returns it (on the boxes' device) without looking at the other arguments, as torchvision;
- ``nms`` of quantized CPU boxes and scores (quint8, qint8, qint32, both the same dtype)
  returns torchvision's result: ranks and IoUs of the raw integers (``_registrations.py``);
- ``nms`` and ``batched_nms`` are leaves of ``torch.fx.symbolic_trace`` graphs
  (``torch.fx.wrap``).
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _registrations  # noqa: F401  (fake kernels and autocast)
from ._category_ids import as_int64
from ._library import build_info
from ._script import scripts_as
from .boxes import (
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    complete_box_iou,
    distance_box_iou,
    generalized_box_iou,
    masks_to_boxes,
    remove_small_boxes,
)
from .rotated import batched_nms_rotated, box_iou_rotated, from_mmcv_rotated, nms_rotated, to_mmcv_rotated

__all__ = [
    "nms",
    "batched_nms",
    "nms_per_image",
    "soft_nms",
    "batched_soft_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "clip_boxes_to_image",
    "masks_to_boxes",
    "remove_small_boxes",
    "box_iou_rotated",
    "nms_rotated",
    "batched_nms_rotated",
    "from_mmcv_rotated",
    "to_mmcv_rotated",
    "build_info",
]
__version__ = __import__("importlib.metadata").metadata.version("detops-nms")


def _nms(boxes: Tensor, scores: Tensor, iou_threshold: float, max_output: Optional[int] = None) -> Tensor:
    return torch.ops.detops.nms(boxes, scores, iou_threshold, max_output)


@torch.fx.wrap  # a leaf of torch.fx graphs, as torchvision's ops are
@scripts_as(_nms)
def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, *, max_output: Optional[int] = None) -> Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes (Tensor[N, 4]): boxes in ``(x1, y1, x2, y2)`` format; float16, bfloat16,
            float32 or float64 (the IoU is computed in float32 for the narrow types).
        scores (Tensor[N]): one score per box, same dtype and device as ``boxes``.
        iou_threshold (float): boxes with IoU > iou_threshold with a kept, higher-scoring
            box are discarded.
        max_output (int, optional, keyword-only): keep at most this many boxes: the result
            is the first ``max_output`` entries of the unlimited one, and the kernel stops
            as soon as it has them. None (default): no limit. Must be >= 0.

    Returns:
        Tensor[K] (int64): indices of the kept boxes, in decreasing order of score.

    Devices, determinism, ONNX: CPU and CUDA kernels, with identical indices on both. The
    result is repeatable (bitwise identical on every run) on both devices. Exports to ONNX
    as ``TopK`` (stable order) + ``NonMaxSuppression`` (``max_output`` becomes its
    ``max_output_boxes_per_class``) with identical indices and order; float64 boxes and a
    negative or NaN ``iou_threshold`` raise ``ValueError`` at export. Details: the Devices,
    data checks and determinism page and the Deployment page.
    """
    return _nms(boxes, scores, iou_threshold, max_output)


def _batched_nms(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, max_output: Optional[int] = None
) -> Tensor:
    # torchvision answers no boxes before it looks at the other arguments. Not while tracing:
    # there the number of boxes may be data-dependent (an unbacked size cannot be compared),
    # and the native op gives the same empty result for valid arguments.
    if not torch.compiler.is_compiling() and boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    return torch.ops.detops.batched_nms(boxes, scores, as_int64(idxs), iou_threshold, max_output)


@torch.fx.wrap  # a leaf of torch.fx graphs, as torchvision's ops are
@scripts_as(_batched_nms)
def batched_nms(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, *, max_output: Optional[int] = None
) -> Tensor:
    """Non-maximum suppression applied independently to each category in one native call:
    boxes with different ``idxs`` never suppress each other.

    Args:
        boxes (Tensor[N, 4]): boxes in ``(x1, y1, x2, y2)`` format; float16, bfloat16,
            float32 or float64.
        scores (Tensor[N]): one score per box, same dtype and device as ``boxes``.
        idxs (Tensor[N]): integer category of each box (any integer dtype; any values).
        iou_threshold (float): IoU above which a lower-scoring box of the same category is
            discarded.
        max_output (int, optional, keyword-only): keep at most this many boxes in all: the
            first ``max_output`` entries of the unlimited result (each category stops once
            it has that many). None (default): no limit. Must be >= 0.

    Returns:
        Tensor[K] (int64): indices of the kept boxes, in decreasing order of score (equal
        scores in input order; torchvision's order among equal scores is that of
        ``torch.sort``'s unstable sort on CUDA and for more than 1,000 boxes on the CPU, so
        it can differ there). Boxes with no elements give an empty int64 tensor on their
        device without a look at the other arguments (as torchvision's batched_nms).

    Devices, determinism, ONNX: CPU and CUDA kernels, with identical indices on both;
    repeatable (bitwise identical on every run) everywhere. Exports to ONNX as ``Unique`` +
    one score row per distinct category (``[1, C, N]``, ``4 * C * N`` bytes) +
    ``NonMaxSuppression``, with identical indices and order; ``max_output`` becomes a
    ``Slice`` of the unlimited result.
    """
    return _batched_nms(boxes, scores, idxs, iou_threshold, max_output)


def _nms_per_image(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float,
    idxs: Optional[Tensor] = None,
    max_output: Optional[int] = None,
) -> Tensor:
    if idxs is not None:
        idxs = as_int64(idxs)
    return torch.ops.detops.nms_per_image(boxes, scores, idxs, iou_threshold, max_output)


@scripts_as(_nms_per_image)
def nms_per_image(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float,
    idxs: Optional[Tensor] = None,
    *,
    max_output: Optional[int] = None,
) -> Tensor:
    """NMS of each image of a batch, in one native call (images in parallel on the CPU).

    Args:
        boxes (Tensor[B, N, 4]): N boxes per image in ``(x1, y1, x2, y2)`` format;
            float16, bfloat16, float32 or float64.
        scores (Tensor[B, N]): one score per box, same dtype and device as ``boxes``.
        iou_threshold (float): as for :func:`nms`.
        idxs (Tensor[B, N], optional): category of each box: then each image is a
            :func:`batched_nms` call (boxes of different categories never suppress each
            other); None: each image is an :func:`nms` call.
        max_output (int, optional, keyword-only): at most this many boxes per image (the
            first ones of that image's result). None (default): no limit. Must be >= 0.

    Returns:
        Tensor[K, 2] (int64): one row ``(image, box)`` per kept box, images in increasing
        order, each image's boxes in the order :func:`nms` / :func:`batched_nms` returns
        them for ``boxes[image]``. ``boxes[keep[:, 0], keep[:, 1]]`` gathers them; images
        with fewer real boxes can be padded with boxes scored ``-inf`` and those rows
        dropped afterwards.

    Devices, determinism, ONNX: CPU kernel (images in parallel) and CUDA kernel (images one
    after the other); repeatable (bitwise identical on every run) on both. Exports to ONNX
    as the :func:`batched_nms` translation over the flattened batch (one category per
    image, or per image and class with ``idxs``) followed by a stable ``TopK`` by image:
    identical rows and order; ``4 * C * B * N`` bytes for C categories.
    """
    return _nms_per_image(boxes, scores, iou_threshold, idxs, max_output)


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: str = "gaussian",
) -> Tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al. 2017): instead of discarding the boxes that overlap a selected
    box, lower their scores.

    Repeatedly select the remaining box with the highest current score and output it with
    that score; then multiply the score of every other remaining box b by a weight of the
    IoU of the selected box with b:

    - ``method="linear"``: ``1 - IoU`` when ``IoU > iou_threshold``, else 1;
    - ``method="gaussian"``: ``exp(-IoU**2 / sigma)`` (``iou_threshold`` is not used).

    Boxes whose score is, or falls, below ``score_threshold`` are dropped.

    Exact rules: scores and IoU are computed in float32 (float64 for float64 input), IoU
    exactly as :func:`nms` computes it; the weight in float64, the product rounded once.
    NaN scores rank above every number and are never dropped; equal scores are selected in
    input order; a NaN IoU (a box with a NaN coordinate) leaves the score unchanged.

    Args:
        boxes (Tensor[N, 4]): boxes in ``(x1, y1, x2, y2)`` format; float16, bfloat16,
            float32 or float64.
        scores (Tensor[N]): one score per box, same dtype and device as ``boxes``.
        iou_threshold (float): the linear method's overlap threshold.
        sigma (float): the gaussian method's width; must be > 0 for it.
        score_threshold (float): boxes scoring below it are dropped.
        method (str): ``"gaussian"`` or ``"linear"``.

    Returns:
        (Tensor[K] int64, Tensor[K]): indices of the kept boxes in the order they were
        selected, and their decayed scores (dtype of ``scores``).

    Raises:
        RuntimeError: ``sigma <= 0`` or NaN with the gaussian method, or another ``method``.

    Devices, determinism, ONNX: CPU and CUDA kernels (same kept indices; decayed scores
    within 1 ulp in float32 and 2 ulp in float64); repeatable (bitwise identical on every
    run) on both. No standard ONNX operator decays scores: exporting it raises
    ``ValueError`` naming the op; run it outside the exported graph.
    """
    return torch.ops.detops.soft_nms(boxes, scores, iou_threshold, sigma, score_threshold, method)


def batched_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: str = "gaussian",
) -> Tuple[Tensor, Tensor]:
    """:func:`soft_nms` applied independently to each category in one native call (the
    categories in parallel on the CPU): boxes with different ``idxs`` never decay each
    other.

    Args:
        boxes (Tensor[N, 4]): boxes in ``(x1, y1, x2, y2)`` format; float16, bfloat16,
            float32 or float64.
        scores (Tensor[N]): one score per box, same dtype and device as ``boxes``.
        idxs (Tensor[N]): integer category of each box (any integer dtype).
        iou_threshold, sigma, score_threshold, method: as in :func:`soft_nms`.

    Returns:
        (Tensor[K] int64, Tensor[K]): the kept boxes of every category and their decayed
        scores, by decreasing decayed score (NaN first; equal scores in input order), which
        within one category is its selection order.

    Devices, determinism, ONNX: CPU kernel (categories in parallel) and CUDA kernel (one
    block of 128 threads per category); repeatable (bitwise identical on every run) on
    both. Like :func:`soft_nms`, it refuses ONNX export with a ``ValueError`` naming the op.
    """
    return torch.ops.detops.batched_soft_nms(
        boxes, scores, as_int64(idxs), iou_threshold, sigma, score_threshold, method
    )
