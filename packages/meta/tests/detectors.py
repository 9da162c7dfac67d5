"""Shared by the whole-detector tests (test_export_detectors.py, test_aoti.py): small
torchvision detectors with random weights, their test images, the detection pipeline after
the backbone as a module of its own, and a comparison of detections that tolerates
reordering among equal scores."""

from collections import OrderedDict
from typing import List, Tuple

import torch

# Small images keep ResNet-50 quick on 2 cores. RetinaNet and FCOS pool down to stride 128:
# the exported program needs every level at least 2 pixels wide (a 1-pixel level is a
# different broadcasting program), hence min_size 160 and images no more than 1.6:1.
MIN_SIZE, MAX_SIZE = 160, 256
SIZES = ((150, 170), (200, 130))  # the image traced, then another size through the same program

MODELS = {
    "fasterrcnn": "fasterrcnn_resnet50_fpn",
    "maskrcnn": "maskrcnn_resnet50_fpn",
    "keypointrcnn": "keypointrcnn_resnet50_fpn",
    "retinanet": "retinanet_resnet50_fpn",
    "fcos": "fcos_resnet50_fpn",
    "ssd": "ssdlite320_mobilenet_v3_large",
}

SPREAD = {"fasterrcnn": 0.02, "maskrcnn": 0.02, "keypointrcnn": 0.02, "retinanet": 0.05, "fcos": 0.05, "ssd": 0.5}


def _classifiers(model) -> list:
    if hasattr(model, "roi_heads"):
        return [model.roi_heads.box_predictor.cls_score]
    head = model.head.classification_head
    if hasattr(head, "cls_logits"):  # RetinaNet, FCOS
        return [head.cls_logits]
    return [level[-1] for level in head.module_list]  # SSDlite: one conv per level


def _calibrate_batch_norm(model) -> None:
    # SSDlite's MobileNetV3 has BatchNorm: with random weights and fresh running statistics its
    # features shrink to 1e-13 by the last level and every class score is 1/91. One pass in
    # training mode with cumulative statistics gives each layer its batch's mean and variance.
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    g = torch.Generator().manual_seed(3)
    model.backbone.train()
    with torch.no_grad():
        model.backbone(torch.rand(4, 3, 320, 320, generator=g))
    model.backbone.eval()


def build(kind: str):
    """The torchvision model `kind` (a key of MODELS), random weights from a fixed seed, eval
    mode, with a score threshold `threshold` to be set by `set_threshold`."""
    import torchvision.models.detection as detection

    torch.manual_seed(0)
    kwargs = {"weights": None, "weights_backbone": None}
    if kind != "ssd":  # SSDlite resizes to a fixed 320x320 whatever its input
        kwargs.update(min_size=MIN_SIZE, max_size=MAX_SIZE)
    if kind in ("fasterrcnn", "maskrcnn", "keypointrcnn"):
        kwargs.update(box_detections_per_img=30, rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100)
    else:
        kwargs.update(detections_per_img=30)
    model = getattr(detection, MODELS[kind])(**kwargs).eval()
    if kind == "ssd":
        _calibrate_batch_norm(model)
    # Random weights give near-uniform class scores, equal to 1e-6 and ordered by noise:
    # a wider spread of logits makes the order of detections a property of the model.
    with torch.no_grad():
        for layer in _classifiers(model):
            torch.nn.init.normal_(layer.weight, std=SPREAD[kind])
            torch.nn.init.zeros_(layer.bias)
    return model


def tiny_faster_rcnn():
    """torchvision's FasterRCNN class (transform, RPN, RoIHeads, MultiScaleRoIAlign, all of
    the post-processing) on a two-convolution backbone with an FPN: what AOTInductor
    compiles is then mostly the detection pipeline, a minute or two on 2 cores, where
    ResNet-50 takes many minutes."""
    from collections import OrderedDict

    from torch import nn
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(0)
    body = nn.Sequential(
        OrderedDict(
            c1=nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU()),
            c2=nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
        )
    )
    backbone = BackboneWithFPN(body, {"c1": "0", "c2": "1"}, [8, 16], 16)  # + a max-pooled level
    model = FasterRCNN(
        backbone,
        min_size=MIN_SIZE,
        max_size=MAX_SIZE,
        rpn_anchor_generator=AnchorGenerator(((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3),
        box_roi_pool=MultiScaleRoIAlign(["0", "1"], 7, 2),
        box_head=TwoMLPHead(16 * 7 * 7, 64),
        box_predictor=FastRCNNPredictor(64, 6),
        box_detections_per_img=30,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
    ).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.roi_heads.box_predictor.cls_score.weight, std=0.5)
    return model


class Heads(torch.nn.Module):
    """What an R-CNN `model` does after its backbone (RPN, RoI heads, post-processing),
    for one image: inputs are the batched, transformed image (its shape sizes the anchors)
    and the backbone's feature maps, in the order `model.backbone` returns them. Exporting
    this leaves the backbone's convolutions out: what remains is where detops' ops are."""

    def __init__(self, model, feature_names: List[str], image_size: Tuple[int, int], original_size: Tuple[int, int]):
        super().__init__()
        self.model, self.feature_names = model, feature_names
        self.image_size, self.original_size = image_size, original_size

    def forward(self, batched: torch.Tensor, features: List[torch.Tensor]):
        from torchvision.models.detection.image_list import ImageList

        images = ImageList(batched, [self.image_size])
        named = OrderedDict(zip(self.feature_names, features))
        proposals, _ = self.model.rpn(images, named)
        detections, _ = self.model.roi_heads(named, proposals, images.image_sizes)
        return self.model.transform.postprocess(detections, images.image_sizes, [self.original_size])


def heads_and_inputs(model, image):
    """(Heads of `model` for `image`, its inputs: the transformed image and the backbone's
    features, computed eagerly in the model's dtype)."""
    with torch.no_grad():
        batched, _ = model.transform([image])
        features = model.backbone(batched.tensors)
    heads = Heads(model, list(features), tuple(batched.image_sizes[0]), tuple(image.shape[-2:]))
    return heads, (batched.tensors, list(features.values()))


def set_threshold(model, value: float) -> None:
    if hasattr(model, "roi_heads"):
        model.roi_heads.score_thresh = value
    else:
        model.score_thresh = value


def images(seed: int = 1):
    """One random image per entry of SIZES, values in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g) for h, w in SIZES]


def blank(kind: str, size=(160, 180)):
    """A flat image: with the threshold chosen by `threshold_between`, no detections. Grey,
    except for FCOS, whose random head scores flat grey above noise: there the colour is the
    normalisation mean, so the backbone sees zeros and every score comes from biases alone."""
    if kind == "fcos":
        return torch.tensor([0.485, 0.456, 0.406])[:, None, None].expand(3, *size).clone()
    return torch.full((3, *size), 0.5)


def top_score(model, image) -> float:
    with torch.no_grad():
        scores = model([image])[0]["scores"]
    return float(scores.max()) if scores.numel() else 0.0


def threshold_between(model, blank_image, others) -> float:
    """A score threshold above every score on `blank_image` and below the best score of each
    of `others`, so that the same model both detects and detects nothing. Asserts one exists."""
    set_threshold(model, 0.0)
    empty = top_score(model, blank_image)
    lowest_best = min(top_score(model, image) for image in others)
    assert lowest_best > empty + 0.02, (
        f"no threshold separates the blank image ({empty}) from the others ({lowest_best})"
    )
    return (empty + lowest_best) / 2


def assert_same_detections(
    got: dict, want: dict, box_atol=1e-3, score_atol=1e-4, dense_atol=1e-4, box_rtol=0.0, what=""
):
    """`got` and `want` hold the same detections: same keys, same count, each detection of
    `want` matched by one of `got` with the same label, its score within `score_atol` and its
    box within `box_atol` pixels plus `box_rtol` times the coordinate. Detections whose
    scores are that close may come out in either order (a different summation order in a
    convolution is enough); the other fields (masks, keypoints) are compared through the
    same matching: float masks within `dense_atol`, and their 0.5 threshold equal wherever
    the probability is not within `dense_atol` of 0.5 (ties)."""
    assert set(got) == set(want), f"{what}: keys {sorted(got)} != {sorted(want)}"
    n = want["boxes"].shape[0]
    assert got["boxes"].shape[0] == n, f"{what}: {got['boxes'].shape[0]} detections, want {n}"
    same = (
        (got["labels"][None, :] == want["labels"][:, None])
        & ((got["scores"][None, :] - want["scores"][:, None]).abs() <= score_atol)
        & (
            (got["boxes"][None, :, :] - want["boxes"][:, None, :]).abs()
            <= box_atol + box_rtol * want["boxes"][:, None, :].abs()
        ).all(dim=2)
    )
    order, used = [], set()
    for i in range(n):
        candidates = [j for j in same[i].nonzero().flatten().tolist() if j not in used]
        if not candidates:
            label = got["labels"] == want["labels"][i]
            nearest = ((got["boxes"] - want["boxes"][i]).abs().amax(dim=1) + 1e9 * ~label).argmin()
            raise AssertionError(
                f"{what}: detection {i} (label {int(want['labels'][i])}, score {float(want['scores'][i]):.6f}, "
                f"box {want['boxes'][i].tolist()}) has no match; nearest of that label: score "
                f"{float(got['scores'][nearest]):.6f}, box {got['boxes'][nearest].tolist()}"
            )
        j = i if i in candidates else candidates[0]
        used.add(j)
        order.append(j)
    order = torch.tensor(order, dtype=torch.long)
    if n:
        print(
            f"{what}: max |box diff| {float((got['boxes'][order] - want['boxes']).abs().max()):.2e} px, "
            f"max |score diff| {float((got['scores'][order] - want['scores']).abs().max()):.2e}"
        )
    for key in want:
        if key in ("boxes", "labels", "scores"):
            continue
        a, b = got[key][order], want[key]
        assert a.shape == b.shape, f"{what}: {key} shape {tuple(a.shape)} != {tuple(b.shape)}"
        if key == "keypoints_scores" or key == "keypoints":
            torch.testing.assert_close(a, b, rtol=1e-4, atol=box_atol if key == "keypoints" else dense_atol, msg=what)
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=dense_atol, msg=f"{what}: {key}")
            tie = (b - 0.5).abs() <= dense_atol
            assert torch.equal((a > 0.5) | tie, (b > 0.5) | tie), f"{what}: {key} thresholded at 0.5 differ"


def detection_error(got: dict, truth: dict) -> dict:
    """The largest difference of `got` from `truth` per field (box pixels, score, mask
    probability), each detection of `truth` paired with the nearest box of its label in `got`."""
    assert got["boxes"].shape[0] == truth["boxes"].shape[0] > 0, "different or no detections"
    other_label = got["labels"][None, :] != truth["labels"][:, None]
    distance = (got["boxes"][None].double() - truth["boxes"][:, None]).abs().amax(dim=2) + 1e9 * other_label
    nearest = distance.argmin(dim=1)
    errors = {"boxes": float(distance.min(dim=1).values.max())}
    for key in ("scores", "masks"):
        if key in truth:
            errors[key] = float((got[key][nearest].double() - truth[key]).abs().max())
    return errors
