"""No op waits for the GPU: on CUDA, every forward and backward runs with
torch.cuda.set_sync_debug_mode("error"), which raises on anything that synchronises the host
with the stream (a device-to-host copy, .item(), nonzero, a blocking host-to-device copy).

The policy (docs/behaviour.md, "Checks on CUDA"): an op never reads device data on the host. Shapes,
dtypes and devices are checked on the host as on the CPU; data values (batch indices of
RoIs, value_spatial_shapes, value_level_start_index) are checked where they are, by the
kernels, and an invalid one gives the documented result instead of an error. The NMS family
is the exception by necessity: its output holds as many indices as boxes are kept, a number
the host must read to allocate the output (torchvision's NMS reads it too).

Without a GPU the policy is proved in three parts:
- on the CPU, the same calls run under a recorder of the operators that synchronise on CUDA
  (detops_core.testing.host_sync): none may run outside detops' native ops, which is the
  Python layer's share (wrappers, modules, autograd glue);
- every call of a CUDA entry point under the emulation runs under the same recorder
  (detops_core.testing.emulation), which sees what the CUDA host code calls through the
  stable ABI;
- a copy to the host, which the recorder cannot tell from any other copy when every tensor is
  on the CPU, needs the CPU device named: no CUDA host code names it (the last test here).
"""

import contextlib
import pathlib
import re

import pytest
import torch

import detops
from detops_core.testing import devices, host_synchronisations

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
def _sync_debug_mode_error():
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _forward_and_backward(leaves, run):
    outputs = run()
    losses = [o.sum() for o in outputs if o.requires_grad]
    return outputs, torch.autograd.grad(losses, leaves)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_backward_do_not_synchronise(device, name):
    leaves, run = CASES[name](device)
    if device == "cuda":
        with _sync_debug_mode_error():
            outputs, grads = _forward_and_backward(leaves, run)
    else:
        (outputs, grads), waits = host_synchronisations(_forward_and_backward, leaves, run, skip_inside="detops::")
        assert not waits, f"{name}: the Python layer runs {waits}, which synchronise on CUDA"
    assert all(torch.isfinite(o).all() for o in outputs), f"{name}: a non-finite output"
    assert all(torch.isfinite(g).all() for g in grads), f"{name}: a non-finite gradient"


@pytest.mark.parametrize(
    "what,fn",
    [
        (".item()", lambda x: x.sum().item()),
        ("bool(tensor)", lambda x: bool(x.sum() > 0)),
        ("a boolean mask", lambda x: x[x > 0.5]),
        ("torch.where(condition)", lambda x: torch.where(x > 0.5)),
        ("unique", lambda x: torch.unique(x)),
    ],
)
def test_the_recorder_sees_each_way_python_synchronises(what, fn):
    _, waits = host_synchronisations(fn, torch.rand(8, generator=G), skip_inside="detops::")
    assert waits, f"{what} was not seen"


PACKAGES = pathlib.Path(__file__).resolve().parents[2]
# The ways C++ can name the CPU device (torch::stable::to(t, Device(DeviceType::CPU)), ...).
CPU_DEVICE = re.compile(r"DeviceType::CPU|\bkCPU\b")


def _cuda_host_code():
    # The CUDA files, and the headers every device shares (entries, checks, core's own).
    patterns = ("*/csrc/cuda/*", "*/csrc/*.h", "core/src/detops_core/include/detops/*")
    return sorted(path for pattern in patterns for path in PACKAGES.glob(pattern))


def test_cuda_host_code_never_names_the_cpu_device():
    files = _cuda_host_code()
    assert len(files) > 30, f"the sources are not there: {PACKAGES}"
    found = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if CPU_DEVICE.search(line.split("//")[0]):
                found.append(f"{path.relative_to(PACKAGES)}:{number}: {line.strip()}")
    assert not found, "CUDA host code names the CPU device (a copy to the host would wait):\n" + "\n".join(found)
