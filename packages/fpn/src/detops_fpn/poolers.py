"""MultiScaleRoIAlign with torchvision.ops.poolers semantics (FPN level mapping with
canonical scale 224 / level 4, scales inferred from the first call's image sizes and then
kept), computed by detops' fused multi-level RoIAlign in one native call."""

import math
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

import detops_roi


class LevelMapper:
    """FPN level of each box (eq. 1 of the FPN paper):
    ``clamp(floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps), k_min, k_max) - k_min``.

    A box whose area is negative (x2 < x1 xor y2 < y1) or NaN has no level: it maps to -1,
    which ``multi_level_roi_align`` pools as a zero row. torchvision casts the NaN to an
    integer that matches no level, so its pooler leaves those rows zero too."""

    def __init__(self, k_min: int, k_max: int, canonical_scale: int = 224, canonical_level: int = 4, eps: float = 1e-6):
        self.k_min = k_min
        self.k_max = k_max
        self.s0 = canonical_scale
        self.lvl0 = canonical_level
        self.eps = eps

    def __call__(self, boxlists: List[Tensor]) -> Tensor:
        areas = []
        for boxes in boxlists:
            b = boxes if boxes.dtype in (torch.float32, torch.float64) else boxes.float()
            areas.append((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
        s = torch.sqrt(torch.cat(areas))
        levels = torch.floor(self.lvl0 + torch.log2(s / self.s0) + torch.tensor(self.eps, dtype=s.dtype))
        levels = torch.clamp(levels, min=self.k_min, max=self.k_max)
        # NaN must never reach the integer cast (its value is unspecified).
        no_level = torch.isnan(levels)
        levels = torch.where(no_level, torch.zeros_like(levels), levels).to(torch.int64) - self.k_min
        return torch.where(no_level, torch.full_like(levels, -1), levels)


def initLevelMapper(  # noqa: N802  (torchvision's name)
    k_min: int, k_max: int, canonical_scale: int = 224, canonical_level: int = 4, eps: float = 1e-6
) -> LevelMapper:
    return LevelMapper(k_min, k_max, canonical_scale, canonical_level, eps)


def _scale_exponent(feature: Tensor, original_size: List[int]) -> int:
    # Exponent of the power of two nearest to feature height / image height. Plain float
    # math (no tensor round trip) so torch.compile and TorchScript take it; feature maps are
    # image sizes divided by powers of two, far from the half-way points where float32 and
    # float64 rounding could disagree.
    if feature.shape[-2] <= 0:
        raise ValueError(
            "MultiScaleRoIAlign: a feature map of height 0 (empty) has no scale to infer, got shape "
            + str(list(feature.shape))
        )
    approx = float(feature.shape[-2]) / float(original_size[0])
    return int(round(math.log(approx) / math.log(2.0)))


def _setup_scales(
    features: List[Tensor], image_shapes: List[Tuple[int, int]], canonical_scale: int, canonical_level: int
) -> Tuple[List[float], LevelMapper]:
    if len(image_shapes) == 0:
        raise ValueError("images list should not be empty")
    max_h = 0
    max_w = 0
    for shape in image_shapes:
        max_h = max(shape[0], max_h)
        max_w = max(shape[1], max_w)
    if max_h <= 0:
        raise ValueError("MultiScaleRoIAlign: image_shapes must hold a positive image height, got " + str(image_shapes))
    exponents = [_scale_exponent(f, [max_h, max_w]) for f in features]
    scales = [2.0 ** float(e) for e in exponents]
    # Levels are -log2(scale): exact integers, taken from the exponents themselves.
    return scales, initLevelMapper(-exponents[0], -exponents[-1], canonical_scale, canonical_level)


# The pooler's steps are leaves of torch.fx graphs (as torchvision's are): feature maps,
# level mapping and pooling depend on dict contents and tensor values that a symbolic trace
# cannot follow.
@torch.fx.wrap
def _filter_input(x: Dict[str, Tensor], featmap_names: List[str]) -> List[Tensor]:
    features: List[Tensor] = []
    for name, feature in x.items():
        if name in featmap_names:
            features.append(feature)
    if len(features) == 0:
        raise ValueError("MultiScaleRoIAlign: x holds no feature map named in featmap_names")
    return features


torch.fx.wrap("_setup_scales")


@torch.jit.unused
def _is_proxy(value: List[float]) -> bool:
    return isinstance(value, torch.fx.Proxy)


@torch.fx.wrap
def _multi_scale_roi_align(
    features: List[Tensor],
    boxes: List[Tensor],
    size: List[int],
    sampling_ratio: int,
    scales: List[float],
    k_min: int,
    k_max: int,
    canonical_scale: int,
    canonical_level: int,
    eps: float,
) -> Tensor:
    # The level mapper is passed as its numbers: a traced graph holds no other objects.
    rois = detops_roi.to_rois("MultiScaleRoIAlign", boxes, features[0])
    if len(features) == 1:
        return detops_roi.roi_align(features[0], rois, size, scales[0], sampling_ratio)
    levels = LevelMapper(k_min, k_max, canonical_scale, canonical_level, eps)(boxes)
    if k_max - k_min + 1 != len(features):
        # torchvision pools only levels that have a feature map; boxes mapped outside
        # them keep a zero row, as level -1 gives: non-consecutive featmap_names, or maps
        # that do not shrink level by level (k_max < k_min).
        inside = (levels >= 0) & (levels < len(features))
        levels = torch.where(inside, levels, torch.full_like(levels, -1))
    return detops_roi.multi_level_roi_align(features, rois, levels, size, scales, sampling_ratio)


class MultiScaleRoIAlign(nn.Module):
    """Multi-scale RoIAlign pooling (FPN). Same arguments and results as
    ``torchvision.ops.MultiScaleRoIAlign``: each box is pooled from the level chosen by
    :class:`LevelMapper`, all levels in one native call.

    Args:
        featmap_names (List[str]): names of the feature maps to pool from.
        output_size (int or (int, int)): pooled size.
        sampling_ratio (int): RoIAlign sampling ratio.
        canonical_scale (int), canonical_level (int): the LevelMapper's parameters
            (keyword-only; defaults 224 and 4).

    ``forward(x, boxes, image_shapes)`` returns Tensor[K, C, output_size[0],
    output_size[1]] in the feature maps' dtype (float16, bfloat16, float32 or float64, as
    :func:`detops_roi.roi_align` takes).

    Devices, determinism, ONNX: the pooling is ``detops_roi.multi_level_roi_align``: CPU
    and CUDA kernels, forward and backward; repeatable (bitwise identical on every run)
    but for the CUDA backward, which adds with float atomics unless
    ``torch.use_deterministic_algorithms(True)`` selects its repeatable fixed-point sum.
    Exports to ONNX as ``RoiAlign`` per level + ``GatherElements`` (a box with no level
    gives a zero row).
    """

    __annotations__ = {"scales": Optional[List[float]], "map_levels": Optional[LevelMapper]}

    def __init__(
        self,
        featmap_names: List[str],
        output_size: Union[int, Tuple[int], List[int]],
        sampling_ratio: int,
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ):
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.featmap_names = featmap_names
        self.sampling_ratio = sampling_ratio
        self.output_size = tuple(output_size)
        self.scales = None
        self.map_levels = None
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level

    def forward(self, x: Dict[str, Tensor], boxes: List[Tensor], image_shapes: List[Tuple[int, int]]) -> Tensor:
        """
        Args:
            x (OrderedDict[str, Tensor]): feature maps (same channels, any sizes).
            boxes (List[Tensor[N, 4]]): per-image boxes, (x1, y1, x2, y2) in image pixels.
            image_shapes (List[(height, width)]): image sizes before the backbone; the
                first call infers each level's scale from them, later calls reuse it.

        Returns:
            Tensor[K, C, output_size[0], output_size[1]] for the K boxes of all images.
        """
        features = _filter_input(x, self.featmap_names)
        scales = self.scales
        mapper = self.map_levels
        if scales is None or mapper is None:
            scales, mapper = _setup_scales(features, image_shapes, self.canonical_scale, self.canonical_level)
            # Under torch.fx tracing these are proxies: the module keeps no state from a
            # trace, so the traced graph infers the scales on every call.
            if torch.jit.is_scripting() or not _is_proxy(scales):
                self.scales = scales
                self.map_levels = mapper
        size = [self.output_size[0], self.output_size[1]]
        return _multi_scale_roi_align(
            features,
            boxes,
            size,
            self.sampling_ratio,
            scales,
            mapper.k_min,
            mapper.k_max,
            mapper.s0,
            mapper.lvl0,
            mapper.eps,
        )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(featmap_names={self.featmap_names}, "
            f"output_size={self.output_size}, sampling_ratio={self.sampling_ratio})"
        )
