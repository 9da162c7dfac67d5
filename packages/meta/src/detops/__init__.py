"""detops: the detection operators of torchvision.ops, under their torchvision.ops names.

    import detops as ops
    keep = ops.nms(boxes, scores, 0.7)
    pooled = ops.roi_align(features, rois, (7, 7), 1 / 16, 2, aligned=True)

Submodules mirror torchvision.ops (``detops.boxes``, ``detops.roi_align``,
``detops.roi_pool``, ``detops.ps_roi_align``, ``detops.ps_roi_pool``, ``detops.deform_conv``,
``detops.feature_pyramid_network``, ``detops.poolers``, the losses ``detops.focal_loss``,
``detops.giou_loss``, ``detops.diou_loss``, ``detops.ciou_loss``, and the plain-PyTorch
layers ``detops.misc``, ``detops.drop_block``, ``detops.stochastic_depth``), plus
multi-scale deformable attention (``detops.deform_attn``), which torchvision does not have.
:func:`use_detops` runs an existing torchvision detection model on detops;
:func:`exportable` / :func:`export_detector` make it exportable with ``torch.export``.
"""

from . import (
    boxes,
    ciou_loss,
    deform_attn,
    deform_conv,
    diou_loss,
    drop_block,
    feature_pyramid_network,
    focal_loss,
    giou_loss,
    misc,
    poolers,
)

# As in torchvision.ops, `detops.roi_align` etc. name the functions while the submodules of
# the same names stay importable (`import detops.roi_align`).
from . import ps_roi_align as _ps_roi_align_module  # noqa: F401
from . import ps_roi_pool as _ps_roi_pool_module  # noqa: F401
from . import roi_align as _roi_align_module  # noqa: F401
from . import roi_pool as _roi_pool_module  # noqa: F401
from . import stochastic_depth as _stochastic_depth_module  # noqa: F401
from ._export import export_detector, exportable
from ._torchvision import use_detops
from .boxes import (
    batched_nms,
    batched_nms_rotated,
    batched_soft_nms,
    box_area,
    box_convert,
    box_iou,
    box_iou_rotated,
    clip_boxes_to_image,
    complete_box_iou,
    distance_box_iou,
    generalized_box_iou,
    masks_to_boxes,
    nms,
    nms_per_image,
    nms_rotated,
    remove_small_boxes,
    soft_nms,
)
from .ciou_loss import complete_box_iou_loss
from .deform_attn import MultiScaleDeformableAttention, multi_scale_deformable_attention
from .deform_conv import DeformConv2d, deform_conv2d
from .diou_loss import distance_box_iou_loss
from .drop_block import DropBlock2d, DropBlock3d, drop_block2d, drop_block3d
from .feature_pyramid_network import FeaturePyramidNetwork
from .focal_loss import sigmoid_focal_loss
from .giou_loss import generalized_box_iou_loss
from .misc import MLP, Conv2dNormActivation, Conv3dNormActivation, FrozenBatchNorm2d, Permute, SqueezeExcitation
from .poolers import MultiScaleRoIAlign
from .ps_roi_align import PSRoIAlign, ps_roi_align
from .ps_roi_pool import PSRoIPool, ps_roi_pool
from .roi_align import RoIAlign, RoIAlignRotated, roi_align, roi_align_rotated
from .roi_pool import RoIPool, roi_pool
from .stochastic_depth import StochasticDepth, stochastic_depth

__all__ = [
    "Conv2dNormActivation",
    "Conv3dNormActivation",
    "DeformConv2d",
    "DropBlock2d",
    "DropBlock3d",
    "FeaturePyramidNetwork",
    "FrozenBatchNorm2d",
    "MLP",
    "MultiScaleDeformableAttention",
    "MultiScaleRoIAlign",
    "PSRoIAlign",
    "PSRoIPool",
    "Permute",
    "RoIAlign",
    "RoIAlignRotated",
    "RoIPool",
    "SqueezeExcitation",
    "StochasticDepth",
    "batched_nms",
    "batched_nms_rotated",
    "batched_soft_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "box_iou_rotated",
    "boxes",
    "ciou_loss",
    "clip_boxes_to_image",
    "complete_box_iou",
    "complete_box_iou_loss",
    "deform_attn",
    "deform_conv",
    "deform_conv2d",
    "diou_loss",
    "distance_box_iou",
    "distance_box_iou_loss",
    "drop_block",
    "drop_block2d",
    "drop_block3d",
    "export_detector",
    "exportable",
    "feature_pyramid_network",
    "focal_loss",
    "generalized_box_iou",
    "generalized_box_iou_loss",
    "giou_loss",
    "masks_to_boxes",
    "misc",
    "multi_scale_deformable_attention",
    "nms",
    "nms_per_image",
    "nms_rotated",
    "poolers",
    "ps_roi_align",
    "ps_roi_pool",
    "remove_small_boxes",
    "roi_align",
    "roi_align_rotated",
    "roi_pool",
    "sigmoid_focal_loss",
    "soft_nms",
    "stochastic_depth",
    "use_detops",
]
__version__ = __import__("importlib.metadata").metadata.version("detops")
