"""No op waits for the GPU: on CUDA, every forward and backward runs with
torch.cuda.set_sync_debug_mode("error"), which raises on anything that synchronises the host
with the stream (a device-to-host copy, .item(), nonzero, a blocking host-to-device copy).

The policy (docs/behaviour.md, "Checks on CUDA"): an op never reads device data on the host. Shapes,
dtypes and devices are checked on the host as on the CPU; data values (batch indices of
RoIs, value_spatial_shapes, value_level_start_index) are checked where they are, by the
kernels, and an invalid one gives the documented result instead of an error. The NMS family
is the exception by necessity: its output holds as many indices as boxes are kept, a number
the host must read to allocate the output (torchvision's NMS reads it too).

On the CPU the same calls run without the mode: that checks the cases themselves (inputs
made before the mode is on, as on CUDA).
"""

import contextlib

import pytest
import torch

import detops
from detops_core.testing import devices

G = torch.Generator().manual_seed(0)


def _randn(*shape, device):
    return torch.randn(*shape, generator=G, dtype=torch.float32).to(device).requires_grad_()


def _boxes(n, device):
    xy = torch.rand(n, 2, generator=G) * 8
    wh = torch.rand(n, 2, generator=G) * 6 + 1
    return torch.cat([xy, xy + wh], 1).to(device).requires_grad_()


def _rois(device):
    return torch.tensor([[0, 1.0, 1.0, 7.0, 8.0], [1, 0.5, 2.0, 9.0, 6.0], [1, 0, 0, 3, 3]], device=device)


# Each case makes its inputs (before the mode is on) and returns (leaves, run): run() does the
# forward passes and returns their outputs; those that require grad are differentiated.
def _roi_ops(device):
    x, rois = _randn(2, 8, 10, 10, device=device), _rois(device)
    return [x], lambda: [
        detops.roi_align(x, rois, 2, sampling_ratio=2),
        detops.roi_pool(x, rois, 2),
        detops.ps_roi_align(x, rois, 2, sampling_ratio=2),
        detops.ps_roi_pool(x, rois, 2),
    ]


def _roi_align_rotated(device):
    x = _randn(1, 4, 10, 10, device=device)
    rois = torch.tensor([[0, 5.0, 5.0, 6.0, 4.0, 30.0]], device=device)
    return [x], lambda: [detops.roi_align_rotated(x, rois, 2, sampling_ratio=2)]


def _multi_level_roi_align(device):
    features = [_randn(2, 4, 16, 16, device=device), _randn(2, 4, 8, 8, device=device)]
    rois, levels = _rois(device), torch.tensor([0, 1, 0], device=device)
    return features, lambda: [
        torch.ops.detops.multi_level_roi_align(features, [1.0, 0.5], rois, levels, 2, 2, 2, False)
    ]


def _multi_scale_roi_align(device):
    features = {"a": _randn(1, 4, 32, 32, device=device), "b": _randn(1, 4, 16, 16, device=device)}
    boxes = [torch.tensor([[2.0, 2, 20, 20], [0, 0, 31, 31]], device=device)]
    pooler = detops.MultiScaleRoIAlign(["a", "b"], 3, 2)
    return list(features.values()), lambda: [pooler(features, boxes, [(128, 128)])]


def _deform_conv2d(device):
    x, offset, weight = (
        _randn(1, 4, 8, 8, device=device),
        _randn(1, 18, 8, 8, device=device),
        _randn(3, 4, 3, 3, device=device),
    )
    mask = torch.rand(1, 9, 8, 8, generator=G).to(device).requires_grad_()
    return [x, offset, weight, mask], lambda: [detops.deform_conv2d(x, offset, weight, padding=1, mask=mask)]


def _msda(shapes_device):
    def case(device):
        value = _randn(2, 29, 2, 4, device=device)
        shapes = torch.tensor([[4, 5], [3, 3]], device=shapes_device or device)
        starts = torch.tensor([0, 20], device=shapes_device or device)
        loc = torch.rand(2, 3, 2, 2, 2, 2, generator=G).to(device).requires_grad_()
        attn = torch.rand(2, 3, 2, 2, 2, generator=G).to(device).requires_grad_()
        return [value, loc, attn], lambda: [
            detops.multi_scale_deformable_attention(value, shapes, loc, attn),
            detops.multi_scale_deformable_attention(value, shapes, loc, attn, starts),
        ]

    return case


def _fpn_upsample_add(device):
    top, lateral = _randn(1, 4, 5, 6, device=device), _randn(1, 4, 10, 12, device=device)
    return [top, lateral], lambda: [torch.ops.detops.fpn_upsample_add(top, lateral)]


def _losses(device):
    logits, a, b = _randn(6, 5, device=device), _boxes(7, device), _boxes(7, device)
    targets = (torch.rand(6, 5, generator=G) < 0.3).float().to(device)
    return [logits, a, b], lambda: [
        detops.sigmoid_focal_loss(logits, targets, reduction="mean"),
        detops.generalized_box_iou_loss(a, b, reduction="mean"),
        detops.distance_box_iou_loss(a, b),
        detops.complete_box_iou_loss(a, b, reduction="sum"),
    ]


def _box_pairs(device):
    a, b = _boxes(5, device), _boxes(4, device)
    rotated = torch.tensor([[5.0, 5, 4, 2, 30], [4, 6, 3, 3, 0]], device=device)
    return [a, b], lambda: [
        detops.generalized_box_iou(a, b),
        detops.distance_box_iou(a, b),
        detops.complete_box_iou(a, b),
        detops.box_iou(a, b),
        detops.box_iou_rotated(rotated, rotated),  # no gradient
    ]


CASES = {
    "roi_align, roi_pool, ps_roi_align, ps_roi_pool": _roi_ops,
    "roi_align_rotated": _roi_align_rotated,
    "multi_level_roi_align": _multi_level_roi_align,
    "MultiScaleRoIAlign": _multi_scale_roi_align,
    "deform_conv2d": _deform_conv2d,
    "multi_scale_deformable_attention, index tensors on value's device": _msda(None),
    "multi_scale_deformable_attention, index tensors on the host": _msda("cpu"),
    "fpn_upsample_add": _fpn_upsample_add,
    "losses": _losses,
    "box-pair IoUs": _box_pairs,
}


@contextlib.contextmanager
def _no_sync(device):
    if device != "cuda":
        yield
        return
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_backward_do_not_synchronise(device, name):
    leaves, run = CASES[name](device)
    with _no_sync(device):
        outputs = run()
        losses = [o.sum() for o in outputs if o.requires_grad]
        grads = torch.autograd.grad(losses, leaves)
    assert all(torch.isfinite(o).all() for o in outputs), f"{name}: a non-finite output"
    assert all(torch.isfinite(g).all() for g in grads), f"{name}: a non-finite gradient"
