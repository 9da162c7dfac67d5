"""roi_align_rotated and RoIAlignRotated: RoI Align over rotated boxes.

A rotated RoI is torchvision's ``cxcywhr`` box ``(cx, cy, w, h, r)``, r in degrees, the
convention of every rotated op in detops (see detops_nms.box_iou_rotated): the box's bins
are laid out along its own axes ``u = (cos r, -sin r)`` (width) and ``v = (sin r, cos r)``
(height), and each bin averages bilinear samples of the feature map as ``roi_align`` does
(same ``aligned`` half-pixel shift, adaptive ``sampling_ratio``, and when not aligned
the legacy minimum 1x1 size, grown from the box's first corner ``c - (w/2) u - (h/2) v``
as roi_align grows a box from ``(x1, y1)``). With ``r = 0`` the result is ``roi_align`` of the box
``(cx - w/2, cy - h/2, cx + w/2, cy + h/2)`` up to rounding. detectron2's ROIAlignRotated
uses the same five numbers; mmcv's RoIAlignRotated takes radians (see
detops_nms.from_mmcv_rotated for the angle).
"""

from typing import List, Union

import torch
from torch import Tensor
from torch.jit.annotations import BroadcastingList2

from detops_core.errors import raises_assertions

from . import _registrations  # noqa: F401  (fake kernels, autograd and autocast)
from ._align_module import AlignSettings
from ._arguments import check_int, size_pair, to_rois

__all__ = ["roi_align_rotated", "RoIAlignRotated"]


@torch.fx.wrap  # a leaf of torch.fx graphs, as torchvision's ops are
@raises_assertions
def roi_align_rotated(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
) -> Tensor:
    """RoI Align over rotated boxes: the average of bilinear samples per bin, the bins laid
    out along each box's own axes.

    Args:
        input (Tensor[N, C, H, W]): feature maps; float16, bfloat16 (both computed in
            float32), float32 or float64.
        boxes (Tensor[K, 6] or List[Tensor[L, 5]]): (batch index, cx, cy, w, h, r) rows, or
            one (cx, cy, w, h, r) tensor per image, in ``input``'s dtype and on its device;
            r in degrees (torchvision's cxcywhr). A
            batch index that is not an integer in [0, N - 1] raises a RuntimeError naming
            ``rois[k, 0]`` on CPU; on CUDA that RoI's row is zero with no gradient.
        output_size (int or Tuple[int, int]): bins per RoI, (height, width): height along
            the box's h side, width along its w side.
        spatial_scale (float): factor from box coordinates to input coordinates.
        sampling_ratio (int): samples per bin and axis; <= 0: ceil(roi size / output size).
        aligned (bool): shift boxes by -0.5 pixel (default True, as detectron2); False: no
            shift and boxes at least 1x1, as roi_align's legacy mode.

    Returns:
        Tensor[K, C, output_size[0], output_size[1]], in ``input``'s dtype.

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward (gradient
    with respect to ``input``). The forward is repeatable (bitwise identical on every run)
    everywhere, and so is the CPU backward; the CUDA backward adds with float atomics (bits
    may vary from run to run) unless ``torch.use_deterministic_algorithms(True)`` is set,
    which selects a repeatable fixed-point sum. ONNX export is refused with a ``ValueError``
    naming the op: ``RoiAlign`` is axis-aligned and ``GridSample``'s borders are not
    roi_align's.
    """
    check_int("roi_align_rotated", "sampling_ratio", sampling_ratio)
    rois = to_rois("roi_align_rotated", boxes, input, "cx, cy, w, h, r")
    size = size_pair("roi_align_rotated", output_size)
    return torch.ops.detops.roi_align_rotated(input, rois, spatial_scale, size[0], size[1], sampling_ratio, aligned)


class RoIAlignRotated(AlignSettings):
    """Module form of :func:`roi_align_rotated`: the settings are fixed at construction;
    ``forward(input, rois)`` takes the function's ``input`` and ``boxes``.

    Args:
        output_size (int or Tuple[int, int]): bins per RoI, (height, width).
        spatial_scale (float): factor from box coordinates to input coordinates. Default: 1.0.
        sampling_ratio (int): samples per bin and axis; <= 0 (default -1): adaptive.
        aligned (bool): shift boxes by -0.5 pixel. Default: True.

    Devices, determinism, ONNX: those of :func:`roi_align_rotated` (CPU and CUDA kernels;
    the CUDA backward is repeatable only under
    ``torch.use_deterministic_algorithms(True)``; ONNX export refused with a ``ValueError``).
    """

    def __init__(
        self,
        output_size: BroadcastingList2[int],
        spatial_scale: float = 1.0,
        sampling_ratio: int = -1,
        aligned: bool = True,
    ):
        super().__init__(output_size, spatial_scale, sampling_ratio, aligned)

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        return roi_align_rotated(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)
