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
from torch.nn.modules.utils import _pair

from detops_core.autocast import register_autocast_float32
from detops_core.autograd import forbid_double_backward, register_autograd
from detops_core.messages import check_dim, check_floating, check_same_device, check_same_dtype, shape_str

from . import _library  # noqa: F401  (the ops must exist before we register against them)
from ._align_module import AlignSettings

__all__ = ["roi_align_rotated", "RoIAlignRotated"]

_MAX_SAMPLING_RATIO = 1024  # roi_checks.h's kMaxSamplingRatio


def _to_rotated_rois(boxes: Union[Tensor, List[Tensor]], input: Tensor) -> Tensor:
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.size(1) != 6:
            raise RuntimeError(
                "roi_align_rotated: boxes must be a Tensor[K, 6] of (batch index, cx, cy, w, h, r) or a "
                "list of Tensor[L, 5], got a tensor of shape " + str(list(boxes.shape))
            )
        return boxes
    if len(boxes) == 0:
        return torch.empty((0, 6), dtype=input.dtype, device=input.device)
    parts: List[Tensor] = []
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.size(1) != 5:
            raise RuntimeError(
                "roi_align_rotated: boxes[" + str(i) + "] must be a Tensor[L, 5] of (cx, cy, w, h, r), got "
                "shape " + str(list(b.shape))
            )
        parts.append(torch.cat([torch.full_like(b[:, :1], float(i)), b], dim=1))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


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
        input (Tensor[N, C, H, W]): feature maps.
        boxes (Tensor[K, 6] or List[Tensor[L, 5]]): (batch index, cx, cy, w, h, r) rows, or
            one (cx, cy, w, h, r) tensor per image; r in degrees (torchvision's cxcywhr). A
            batch index that is not an integer in [0, N - 1] raises a RuntimeError naming
            ``rois[k, 0]`` on CPU; on CUDA that RoI's row is zero with no gradient.
        output_size (int or Tuple[int, int]): bins per RoI, (height, width): height along
            the box's h side, width along its w side.
        spatial_scale (float): factor from box coordinates to input coordinates.
        sampling_ratio (int): samples per bin and axis; <= 0: ceil(roi size / output size).
        aligned (bool): shift boxes by -0.5 pixel (default True, as detectron2); False: no
            shift and boxes at least 1x1, as roi_align's legacy mode.

    Returns:
        Tensor[K, C, output_size[0], output_size[1]]
    """
    if not torch.jit.is_scripting():
        if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int):
            raise RuntimeError("roi_align_rotated: sampling_ratio must be an int, got " + str(sampling_ratio))
    rois = _to_rotated_rois(boxes, input)
    size = _pair(output_size)
    if not torch.jit.is_scripting():
        if len(size) < 2:
            raise RuntimeError("roi_align_rotated: output_size must be an int or a pair of ints, got " + str(size))
    return torch.ops.detops.roi_align_rotated(input, rois, spatial_scale, size[0], size[1], sampling_ratio, aligned)


class RoIAlignRotated(AlignSettings):
    """See :func:`roi_align_rotated`."""

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


# ---------------------------------------------------------------------------- fake kernels
# csrc/rotated_entry.h's checks, in the same order and words.


def _check_rois(op, like_name, like, rois):
    torch._check(
        rois.dim() == 2 and rois.shape[1] == 6,
        lambda: (
            f"{op}: rois must be a 2-D tensor of shape [K, 6] holding (batch index, cx, cy, w, h, r), "
            f"got shape {shape_str(rois)}"
        ),
    )
    check_same_dtype(op, like_name, like, "rois", rois)
    check_same_device(op, like_name, like, "rois", rois)


def _check_sizes(op, ph, pw, sampling_ratio):
    torch._check(
        ph >= 1 and pw >= 1,
        lambda: f"{op}: output_size (pooled_height, pooled_width) must be at least 1, got ({ph}, {pw})",
    )
    torch._check(ph * pw < 2**63, lambda: f"{op}: output_size ({ph}, {pw}) has more than 2^63 - 1 bins")
    torch._check(
        sampling_ratio <= _MAX_SAMPLING_RATIO,
        lambda: (
            f"{op}: sampling_ratio must be <= 0 (adaptive) or between 1 and {_MAX_SAMPLING_RATIO}, got {sampling_ratio}"
        ),
    )


@torch.library.register_fake("detops::roi_align_rotated")
def _roi_align_rotated_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    op = "detops.roi_align_rotated"
    check_dim(op, "input", input, 4, "[N, C, H, W]")
    check_floating(op, "input", input)
    _check_rois(op, "input", input, rois)
    _check_sizes(op, pooled_height, pooled_width, sampling_ratio)
    return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))


@torch.library.register_fake("detops::_roi_align_rotated_backward")
def _roi_align_rotated_backward_fake(grad, rois, spatial_scale, ph, pw, batch, channels, height, width, sr, aligned):
    op = "detops._roi_align_rotated_backward"
    _check_sizes(op, ph, pw, sr)
    torch._check(
        batch >= 0 and channels >= 0 and height >= 0 and width >= 0,
        lambda: f"{op}: input sizes must be non-negative, got [{batch}, {channels}, {height}, {width}]",
    )
    _check_rois(op, "grad", grad, rois)
    expected = [rois.shape[0], channels, ph, pw]
    torch._check(
        grad.dim() == 4 and list(grad.shape) == expected,
        lambda: f"{op}: grad must have shape [{', '.join(map(str, expected))}], got {shape_str(grad)}",
    )
    check_floating(op, "grad", grad)
    return grad.new_empty((batch, channels, height, width))


def _backward(args, grad):
    n, c, h, w = args.input
    grad_input = torch.ops.detops._roi_align_rotated_backward(
        grad, args.rois, args.spatial_scale, args.pooled_height, args.pooled_width, n, c, h, w,
        args.sampling_ratio, args.aligned,
    )  # fmt: skip
    return {"input": grad_input}


# Gradients flow to the feature map only (none to the boxes, as in roi_align).
register_autograd("detops::roi_align_rotated", _backward, save=("rois",))
forbid_double_backward("detops::_roi_align_rotated_backward", "detops.roi_align_rotated")
register_autocast_float32("detops::roi_align_rotated")
