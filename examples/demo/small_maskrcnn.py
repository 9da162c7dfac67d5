"""The demo's detector: torchvision's ``MaskRCNN`` with a small backbone, sized for 128 x 128
images and 2 CPU cores (a ResNet-50 Mask R-CNN takes about a second per training step
there; this one about a tenth)."""

from __future__ import annotations

from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign

FPN_CHANNELS = 64
LEVELS = ["0", "1", "2"]  # strides 4, 8, 16


def _conv(cin: int, cout: int, stride: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Backbone(nn.Module):
    """Four stride-2 stages of two 3x3 convolutions, then torchvision's FPN on the last three."""

    def __init__(self) -> None:
        super().__init__()
        widths = [16, 32, 64, 96]
        stages, cin = [], 3
        for w in widths:
            stages.append(nn.Sequential(_conv(cin, w, 2), _conv(w, w, 1)))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.fpn = FeaturePyramidNetwork(widths[1:], FPN_CHANNELS)
        self.out_channels = FPN_CHANNELS

    def forward(self, x):
        features = {}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i > 0:
                features[LEVELS[i - 1]] = x
        return self.fpn(features)


def small_maskrcnn(num_classes: int, image_size: int) -> MaskRCNN:
    """A Mask R-CNN for ``num_classes`` kinds of object (plus background) in square images."""
    anchors = AnchorGenerator(((10, 16), (24, 32), (44, 60)), ((0.5, 1.0, 2.0),) * len(LEVELS))
    return MaskRCNN(
        Backbone(),
        num_classes=None,
        min_size=image_size,
        max_size=image_size,
        image_mean=[0.5] * 3,
        image_std=[0.25] * 3,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=128,
        box_roi_pool=MultiScaleRoIAlign(LEVELS, 7, 2),
        box_head=TwoMLPHead(FPN_CHANNELS * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, num_classes + 1),
        box_batch_size_per_image=64,
        box_detections_per_img=20,
        mask_roi_pool=MultiScaleRoIAlign(LEVELS, 14, 2),
        mask_head=MaskRCNNHeads(FPN_CHANNELS, [64, 64], 1),
        mask_predictor=MaskRCNNPredictor(64, 64, num_classes + 1),
    )
