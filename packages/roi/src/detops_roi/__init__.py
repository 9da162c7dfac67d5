"""detops-roi: RoI pooling with torchvision.ops semantics.

``roi_align``, ``roi_pool``, ``ps_roi_align`` and ``ps_roi_pool`` (and the modules
``RoIAlign``, ``RoIPool``, ``PSRoIAlign``, ``PSRoIPool``) run native CPU and CUDA kernels
registered as ``torch.ops.detops.<name>`` with backward ops ``_<name>_backward``. They are
differentiable with respect to ``input`` (first derivatives), script with TorchScript,
trace under ``torch.compile(fullgraph=True)`` and ``torch.export``, and compute
float16/bfloat16 in float32. ``multi_level_roi_align`` pools every RoI from its own FPN
level in one native call (what MultiScaleRoIAlign needs).

Defined behaviour where torchvision is silent or unsafe:

- the batch index (column 0 of a Tensor[K, 5]) must be an integer in [0, N - 1]. On CPU
  anything else (out of range, fractional, NaN, infinite) raises a RuntimeError naming
  ``rois[k, 0]``. On CUDA that check would copy the RoIs to the host and wait for the GPU
  on every call, so the kernels test each RoI instead: a RoI with an invalid batch index
  gets a zero output row (``roi_pool``'s argmax: -1) and no gradient, and the other RoIs
  are unaffected. ``multi_level_roi_align``'s levels likewise: a level that is neither -1
  nor in [0, L - 1] raises naming ``levels[k]`` on CPU, and is treated as -1 (zero row,
  no gradient) on CUDA;
- K = 0 RoIs gives an empty [0, C, h, w] result (and a zero gradient);
- an empty feature map (H or W = 0) pools to zeros;
- roi_align / ps_roi_align: a sample at a NaN or infinite position lies outside the map and
  contributes nothing, so a box with NaN coordinates pools to 0; adaptive sampling grids
  are capped at 2^30 samples per axis and only samples that can touch the map are visited,
  so huge boxes cost no more than the map; a bin with no samples is 0 (torchvision's
  ps_roi_align divides 0 by 0 there and returns NaN);
- roi_pool / ps_roi_pool: a box with a non-finite coordinate has only empty bins (0, and
  argmax -1 for roi_pool); coordinates are clamped to +-2^40 before rounding;
- ps_roi_pool clamps bins to [0, H - 1] x [0, W - 1] like torchvision's forward; its
  backward is the exact gradient of that forward (torchvision's backward also spreads
  gradient onto the last row and column, which its forward never reads);
- sampling_ratio <= 0 means adaptive (as in torchvision); values above 1024 are rejected;
- under autocast, the ops compute in float32 and return the feature map's dtype (as
  torchvision does);
- boxes of the wrong shape (a Tensor that is not [K, 5], a list entry that is not [L, 4])
  raise ``detops_core.errors.AssertionRuntimeError``: a RuntimeError with detops' message
  that ``except AssertionError`` also catches, as torchvision's check_roi_boxes_shape
  raises AssertionError;
- roi_align of quantized CPU tensors (quint8, qint8, qint32; input and rois both
  quantized, the same dtype, one image) returns exactly torchvision's qroi_align result
  (``_quantized.py``);
- the functions are ``torch.fx.wrap``-ed: under ``torch.fx.symbolic_trace`` they are leaf
  ``call_function`` nodes, in the modules and in user code that calls
  ``detops_roi.<function>``.
"""

from typing import List, Union

import torch
from torch import Tensor, nn
from torch.jit.annotations import BroadcastingList2

from detops_core.errors import raises_assertions

from . import _registrations  # noqa: F401  (fake kernels, autograd, autocast, quantized kernel)
from ._align_module import AlignSettings
from ._arguments import check_int, size_pair, to_rois
from ._library import build_info
from .rotated import RoIAlignRotated, roi_align_rotated

__all__ = [
    "roi_align",
    "roi_pool",
    "ps_roi_align",
    "ps_roi_pool",
    "multi_level_roi_align",
    "RoIAlign",
    "RoIPool",
    "PSRoIAlign",
    "PSRoIPool",
    "roi_align_rotated",
    "RoIAlignRotated",
    "build_info",
]
__version__ = __import__("importlib.metadata").metadata.version("detops-roi")


@torch.fx.wrap  # a leaf of torch.fx graphs, as torchvision's ops are
@raises_assertions
def roi_align(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoI Align (Mask R-CNN): average of bilinearly interpolated samples per bin.

    Args:
        input (Tensor[N, C, H, W]): feature maps; float16, bfloat16 (both computed in
            float32), float32 or float64.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): (batch index, x1, y1, x2, y2) rows, or
            one (x1, y1, x2, y2) tensor per image, in ``input``'s dtype and on its device.
            A batch index that is not an integer in
            [0, N - 1] raises a RuntimeError naming ``rois[k, 0]`` on CPU; on CUDA that
            RoI's output row is zero and gets no gradient (no host synchronisation).
        output_size (int or Tuple[int, int]): bins per RoI, (height, width).
        spatial_scale (float): factor from box coordinates to input coordinates.
        sampling_ratio (int): samples per bin and axis; <= 0: ceil(roi size / output size).
        aligned (bool): shift boxes by -0.5 pixel (Detectron2); False keeps the legacy
            behaviour (no shift, boxes at least 1x1).

    Returns:
        Tensor[K, C, output_size[0], output_size[1]], in ``input``'s dtype.

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward (gradient
    with respect to ``input``). The forward is repeatable (bitwise identical on every run)
    everywhere, and so is the CPU backward; the CUDA backward adds with float atomics (bits
    may vary from run to run) unless ``torch.use_deterministic_algorithms(True)`` is set,
    which selects a repeatable fixed-point sum. Exports to ONNX as ``RoiAlign`` (opset 16+;
    ``aligned`` as ``half_pixel`` / ``output_half_pixel``, adaptive ``sampling_ratio`` as 0;
    NaN or infinite boxes give zero rows as in detops).
    """
    check_int("roi_align", "sampling_ratio", sampling_ratio)
    rois = to_rois("roi_align", boxes, input)
    size = size_pair("roi_align", output_size)
    return torch.ops.detops.roi_align(input, rois, spatial_scale, size[0], size[1], sampling_ratio, aligned)


@torch.fx.wrap  # a leaf of torch.fx graphs, as torchvision's ops are
@raises_assertions
def roi_pool(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """RoI Pool (Fast R-CNN): maximum over integer bins of the rounded box.

    Args:
        input (Tensor[N, C, H, W]): feature maps; float16, bfloat16 (both computed in
            float32), float32 or float64.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): as in :func:`roi_align`; an invalid
            batch index raises on CPU and gives a zero row, argmax -1 and no gradient on
            CUDA.
        output_size (int or Tuple[int, int]): bins per RoI, (height, width).
        spatial_scale (float): factor from box coordinates to input coordinates.

    Returns:
        Tensor[K, C, output_size[0], output_size[1]], in ``input``'s dtype.

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward (gradient
    with respect to ``input``). The forward is repeatable (bitwise identical on every run)
    everywhere, and so is the CPU backward; the CUDA backward adds with float atomics (bits
    may vary from run to run) unless ``torch.use_deterministic_algorithms(True)`` is set,
    which selects a repeatable fixed-point sum. Exports to ONNX as ``MaxRoiPool``: exact values
    (coordinates beyond 2^31 pixels after scaling differ, ONNX Runtime being 32-bit).
    """
    rois = to_rois("roi_pool", boxes, input)
    size = size_pair("roi_pool", output_size)
    out, _ = torch.ops.detops.roi_pool(input, rois, spatial_scale, size[0], size[1])
    return out


@torch.fx.wrap  # a leaf of torch.fx graphs, as torchvision's ops are
@raises_assertions
def ps_roi_align(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
) -> Tensor:
    """Position-sensitive RoI Align (R-FCN): bin (i, j) of output channel c averages input
    channel (c * output_size[0] + i) * output_size[1] + j.

    Args:
        input (Tensor[N, C, H, W]): feature maps, C a multiple of
            ``output_size[0] * output_size[1]``; float16, bfloat16 (both computed in
            float32), float32 or float64.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): as in :func:`roi_align`, always shifted
            by -0.5 pixel (no ``aligned`` argument); an invalid batch index raises on CPU and
            gives a zero row and no gradient on CUDA.
        output_size (int or Tuple[int, int]): bins per RoI, (height, width).
        spatial_scale (float): factor from box coordinates to input coordinates.
        sampling_ratio (int): samples per bin and axis; <= 0: adaptive, as in
            :func:`roi_align`.

    Returns:
        Tensor[K, C / (output_size[0] * output_size[1]), output_size[0], output_size[1]],
        in ``input``'s dtype.

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward (gradient
    with respect to ``input``). The forward is repeatable (bitwise identical on every run)
    everywhere, and so is the CPU backward; the CUDA backward adds with float atomics (bits
    may vary from run to run) unless ``torch.use_deterministic_algorithms(True)`` is set,
    which selects a repeatable fixed-point sum. Exports to ONNX as ``RoiAlign`` over all channels
    + ``GatherElements`` (it computes ``output_size[0] * output_size[1]`` times the
    channels it keeps).
    """
    check_int("ps_roi_align", "sampling_ratio", sampling_ratio)
    rois = to_rois("ps_roi_align", boxes, input)
    size = size_pair("ps_roi_align", output_size)
    return torch.ops.detops.ps_roi_align(input, rois, spatial_scale, size[0], size[1], sampling_ratio)


@torch.fx.wrap  # a leaf of torch.fx graphs, as torchvision's ops are
@raises_assertions
def ps_roi_pool(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """Position-sensitive RoI Pool (R-FCN): average over integer bins, channel per bin as
    in :func:`ps_roi_align`.

    Args:
        input (Tensor[N, C, H, W]): feature maps, C a multiple of
            ``output_size[0] * output_size[1]``; float16, bfloat16 (both computed in
            float32), float32 or float64.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): as in :func:`roi_pool`; an invalid
            batch index raises on CPU and gives a zero row and no gradient on CUDA.
        output_size (int or Tuple[int, int]): bins per RoI, (height, width).
        spatial_scale (float): factor from box coordinates to input coordinates.

    Returns:
        Tensor[K, C / (output_size[0] * output_size[1]), output_size[0], output_size[1]],
        in ``input``'s dtype.

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward (gradient
    with respect to ``input``). The forward is repeatable (bitwise identical on every run)
    everywhere, and so is the CPU backward; the CUDA backward adds with float atomics (bits
    may vary from run to run) unless ``torch.use_deterministic_algorithms(True)`` is set,
    which selects a repeatable fixed-point sum. Exports to ONNX as a float64 summed-area table
    (``CumSum``) + ``Gather``, detops' integer bins computed in the graph.
    """
    rois = to_rois("ps_roi_pool", boxes, input)
    size = size_pair("ps_roi_pool", output_size)
    return torch.ops.detops.ps_roi_pool(input, rois, spatial_scale, size[0], size[1])


@torch.fx.wrap  # a leaf of torch.fx graphs, as torchvision's ops are
@raises_assertions
def multi_level_roi_align(
    features: List[Tensor],
    rois: Tensor,
    levels: Tensor,
    output_size: BroadcastingList2[int],
    spatial_scales: List[float],
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """roi_align of every RoI on its own feature map, in one native call.

    Args:
        features (List[Tensor[N, C, H_l, W_l]]): the levels (same N, C, dtype and device);
            float16, bfloat16 (both computed in float32), float32 or float64.
        rois (Tensor[K, 5]): (batch index, x1, y1, x2, y2) rows; an invalid batch index
            as in :func:`roi_align` (CPU: RuntimeError, CUDA: zero row, no gradient).
        levels (Tensor[K], integer): the level of each RoI, in [0, len(features) - 1], or
            -1 for "no level": that RoI's output row is zero and gets no gradient. Any other
            value raises a RuntimeError naming ``levels[k]`` on CPU and counts as -1 on
            CUDA.
        output_size, sampling_ratio, aligned: as in :func:`roi_align`.
        spatial_scales (List[float]): one scale per level.

    Returns:
        Tensor[K, C, output_size[0], output_size[1]]: equal to
        ``roi_align(features[levels[k]], rois[k:k+1], ..., spatial_scales[levels[k]])``.

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward (gradient
    with respect to ``input``). The forward is repeatable (bitwise identical on every run)
    everywhere, and so is the CPU backward; the CUDA backward adds with float atomics (bits
    may vary from run to run) unless ``torch.use_deterministic_algorithms(True)`` is set,
    which selects a repeatable fixed-point sum. Exports to ONNX as ``RoiAlign`` per level +
    ``GatherElements`` (level -1 gives a zero row).
    """
    check_int("multi_level_roi_align", "sampling_ratio", sampling_ratio)
    size = size_pair("multi_level_roi_align", output_size)
    if levels.dtype != torch.int64 and not levels.is_floating_point():
        levels = levels.to(torch.int64)
    return torch.ops.detops.multi_level_roi_align(
        features, spatial_scales, rois, levels, size[0], size[1], sampling_ratio, aligned
    )


class RoIAlign(AlignSettings):
    """Module form of :func:`roi_align`: the settings are fixed at construction;
    ``forward(input, rois)`` takes the function's ``input`` and ``boxes``.

    Args:
        output_size (int or Tuple[int, int]): bins per RoI, (height, width).
        spatial_scale (float): factor from box coordinates to input coordinates.
        sampling_ratio (int): samples per bin and axis; <= 0: adaptive.
        aligned (bool): shift boxes by -0.5 pixel. Default: False.

    Devices, determinism, ONNX: those of :func:`roi_align` (CPU and CUDA kernels;
    the CUDA backward is repeatable only under
    ``torch.use_deterministic_algorithms(True)``; ONNX: ``RoiAlign``).
    """

    def __init__(
        self,
        output_size: BroadcastingList2[int],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = False,
    ):
        super().__init__(output_size, spatial_scale, sampling_ratio, aligned)

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)


class RoIPool(nn.Module):
    """Module form of :func:`roi_pool`: the settings are fixed at construction;
    ``forward(input, rois)`` takes the function's ``input`` and ``boxes``.

    Args:
        output_size (int or Tuple[int, int]): bins per RoI, (height, width).
        spatial_scale (float): factor from box coordinates to input coordinates.

    Devices, determinism, ONNX: those of :func:`roi_pool` (CPU and CUDA kernels;
    the CUDA backward is repeatable only under
    ``torch.use_deterministic_algorithms(True)``; ONNX: ``MaxRoiPool``).
    """

    def __init__(self, output_size: BroadcastingList2[int], spatial_scale: float):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale})"


class PSRoIAlign(nn.Module):
    """Module form of :func:`ps_roi_align`: the settings are fixed at construction;
    ``forward(input, rois)`` takes the function's ``input`` and ``boxes``.

    Args:
        output_size (int or Tuple[int, int]): bins per RoI, (height, width).
        spatial_scale (float): factor from box coordinates to input coordinates.
        sampling_ratio (int): samples per bin and axis; <= 0: adaptive.

    Devices, determinism, ONNX: those of :func:`ps_roi_align` (CPU and CUDA kernels;
    the CUDA backward is repeatable only under
    ``torch.use_deterministic_algorithms(True)``; ONNX: ``RoiAlign`` + ``GatherElements``).
    """

    def __init__(self, output_size: BroadcastingList2[int], spatial_scale: float, sampling_ratio: int):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        return ps_roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio})"
        )


class PSRoIPool(nn.Module):
    """Module form of :func:`ps_roi_pool`: the settings are fixed at construction;
    ``forward(input, rois)`` takes the function's ``input`` and ``boxes``.

    Args:
        output_size (int or Tuple[int, int]): bins per RoI, (height, width).
        spatial_scale (float): factor from box coordinates to input coordinates.

    Devices, determinism, ONNX: those of :func:`ps_roi_pool` (CPU and CUDA kernels;
    the CUDA backward is repeatable only under
    ``torch.use_deterministic_algorithms(True)``; ONNX: ``CumSum`` + ``Gather``).
    """

    def __init__(self, output_size: BroadcastingList2[int], spatial_scale: float):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        return ps_roi_pool(input, rois, self.output_size, self.spatial_scale)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale})"
