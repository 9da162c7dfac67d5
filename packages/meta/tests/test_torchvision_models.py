"""A torchvision Mask R-CNN (random weights, nothing downloaded) gives the same detections,
losses and gradients with detops swapped in (detops.use_detops), on every device; so do
RetinaNet's and FCOS's training losses (detops' sigmoid_focal_loss and
generalized_box_iou_loss)."""

import pytest
import torch

import detops
from detops_core.testing import devices, full_float32

torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed (the model comes from it)")
from torchvision.models.detection import maskrcnn_resnet50_fpn  # noqa: E402


def _model():
    torch.manual_seed(0)
    # Small images keep ResNet-50 quick on 2 cores; score threshold 0 so random weights
    # still produce detections (and masks) to compare.
    return maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        min_size=224,
        max_size=320,
        box_score_thresh=0.0,
        box_detections_per_img=40,
        rpn_pre_nms_top_n_test=400,
        rpn_post_nms_top_n_test=200,
    )


def _on(device, images, targets=None):
    images = [i.to(device) for i in images]
    if targets is None:
        return images
    return images, [{k: v.to(device) for k, v in t.items()} for t in targets]


def _images():
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 200, 260, generator=g), torch.rand(3, 240, 220, generator=g)]


def _targets():
    g = torch.Generator().manual_seed(2)
    targets = []
    for h, w in ((200, 260), (240, 220)):
        corner = torch.rand(3, 2, generator=g) * torch.tensor([w / 2, h / 2])
        size = 20 + torch.rand(3, 2, generator=g) * 80
        boxes = torch.cat((corner, corner + size), dim=1)
        masks = torch.zeros(3, h, w, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
            masks[i, y1:y2, x1:x2] = 1
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 5, 9]), "masks": masks})
    return targets


def test_swap_replaces_and_restores_modules():
    model = _model()
    fpn, pooler = model.backbone.fpn, model.roi_heads.box_roi_pool
    with detops.use_detops(model):
        assert isinstance(model.backbone.fpn, detops.FeaturePyramidNetwork)
        assert isinstance(model.roi_heads.mask_roi_pool, detops.MultiScaleRoIAlign)
        assert torchvision.ops.boxes.batched_nms is detops.batched_nms
        # parameters are shared, not copied
        assert model.backbone.fpn.inner_blocks[0][0].weight is fpn.inner_blocks[0][0].weight
    assert model.backbone.fpn is fpn and model.roi_heads.box_roi_pool is pooler
    assert torchvision.ops.boxes.batched_nms is not detops.batched_nms


def test_swap_draws_no_random_numbers():
    # A model with each kind of twin that has parameters: FPN (with P6/P7) and DeformConv2d.
    model = torch.nn.Sequential(
        torchvision.ops.FeaturePyramidNetwork([8, 16], 8, torchvision.ops.feature_pyramid_network.LastLevelP6P7(8, 8)),
        torchvision.ops.DeformConv2d(4, 4, 3),
    )
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    with detops.use_detops(model):
        assert isinstance(model[1], detops.DeformConv2d)
        got = torch.rand(4)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("device", devices())
def test_eval_detections_match(device):
    model = _model().eval().to(device)
    images = _on(device, _images())
    with torch.no_grad(), full_float32():
        expected = model(images)
        with detops.use_detops(model):
            got = model(images)
    for a, b in zip(got, expected):
        assert len(b["boxes"]) > 0
        assert torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a["masks"], b["masks"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("device", devices())
def test_train_losses_and_gradients_match(device):
    model = _model().train().to(device)
    images, targets = _on(device, _images(), _targets())
    with full_float32():
        torch.manual_seed(3)  # the RPN and box samplers draw random subsets
        losses = model(images, targets)
        sum(losses.values()).backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    with detops.use_detops(model), full_float32():
        torch.manual_seed(3)
        got = model(images, targets)
        sum(got.values()).backward()
    for name in losses:
        torch.testing.assert_close(got[name], losses[name], rtol=1e-4, atol=1e-5)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("name", ["retinanet", "fcos"])
def test_dense_detectors_train_on_detops_losses(name):
    from torchvision.models.detection import fcos, fcos_resnet50_fpn, retinanet, retinanet_resnet50_fpn

    build = {"retinanet": retinanet_resnet50_fpn, "fcos": fcos_resnet50_fpn}[name]
    torch.manual_seed(0)
    model = build(weights=None, weights_backbone=None, min_size=160, max_size=224).train()
    images, targets = _images(), [{k: t[k] for k in ("boxes", "labels")} for t in _targets()]
    with full_float32():
        losses = model(images, targets)
        sum(losses.values()).backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    module = {"retinanet": retinanet, "fcos": fcos}[name]
    with detops.use_detops(model), full_float32():
        assert module.sigmoid_focal_loss is detops.sigmoid_focal_loss
        got = model(images, targets)
        sum(got.values()).backward()
    assert module.sigmoid_focal_loss is torchvision.ops.sigmoid_focal_loss
    for key in losses:
        torch.testing.assert_close(got[key], losses[key], rtol=1e-4, atol=1e-5)
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, expected_grads[n], rtol=1e-3, atol=1e-4, msg=n)


def _train_two_steps(device):
    """A Mask R-CNN on detops after two SGD steps on one image: its parameters."""
    model = _model().train().to(device)
    images, targets = _on(device, _images()[:1], _targets()[:1])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with detops.use_detops(model):
        for step in range(2):
            torch.manual_seed(3 + step)  # the RPN and box samplers draw random subsets
            losses = model(images, targets)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.whole_model
@pytest.mark.parametrize("device", devices())
def test_training_is_bitwise_repeatable_under_deterministic_algorithms(device, monkeypatch):
    # On CUDA, torch's own cuBLAS products refuse to run under the flag without this.
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = {n: p.detach().clone() for n, p in _model().named_parameters()}
    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = _train_two_steps(device), _train_two_steps(device)
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)
    assert first.keys() == second.keys() == before.keys()
    changed = [n for n in first if not torch.equal(first[n].cpu(), before[n])]
    assert len(changed) > len(first) // 2, "training left most parameters unchanged"
    for name in first:
        assert torch.equal(first[name], second[name]), f"{name} differs between two identical trainings"
