"""torch.use_deterministic_algorithms and detops' gradients.

The CUDA backward kernels of eight ops add into the gradient with atomics (float sums in
whatever order the threads run). Until they have deterministic paths, their gradient on
CUDA does what PyTorch's own nondeterministic kernels do under the flag: raise a
RuntimeError naming the op, or warn with warn_only=True. The CPU kernels are deterministic
(one writer per gradient element) and never alert.

This machine has no GPU, so the alert is checked by declaring the CPU one of the devices
whose kernels add with atomics (detops_core.autograd.ATOMIC_DEVICE_TYPES): the same code
path a CUDA gradient takes, on CPU tensors.
"""

import warnings

import pytest
import torch

import detops
import detops_core.autograd

G = torch.Generator().manual_seed(0)


def _image():
    return torch.randn(1, 8, 10, 10, generator=G, dtype=torch.float64, requires_grad=True)


def _rois():
    return torch.tensor([[0, 1.0, 1.0, 7.0, 8.0], [0, 0.5, 2.0, 9.0, 6.0]], dtype=torch.float64)


def _roi_align():
    x = _image()
    return x, detops.roi_align(x, _rois(), 2, sampling_ratio=2)


def _roi_align_rotated():
    x = _image()
    rois = torch.tensor([[0, 5.0, 5.0, 6.0, 4.0, 30.0]], dtype=torch.float64)
    return x, detops.roi_align_rotated(x, rois, 2, sampling_ratio=2)


def _roi_pool():
    x = _image()
    return x, detops.roi_pool(x, _rois(), 2)


def _ps_roi_align():
    x = _image()
    return x, detops.ps_roi_align(x, _rois(), 2, sampling_ratio=2)


def _ps_roi_pool():
    x = _image()
    return x, detops.ps_roi_pool(x, _rois(), 2)


def _multi_level_roi_align():
    features = [_image(), torch.randn(1, 8, 5, 5, generator=G, dtype=torch.float64, requires_grad=True)]
    levels = torch.tensor([0, 1])
    out = torch.ops.detops.multi_level_roi_align(features, [1.0, 0.5], _rois(), levels, 2, 2, 2, False)
    return features[0], out


def _deform_conv2d():
    x = _image()
    offset = torch.randn(1, 18, 8, 8, generator=G, dtype=torch.float64)
    weight = torch.randn(4, 8, 3, 3, generator=G, dtype=torch.float64)
    return x, detops.deform_conv2d(x, offset, weight)


def _multi_scale_deformable_attention():
    value = torch.randn(1, 20, 2, 4, generator=G, dtype=torch.float64, requires_grad=True)
    shapes = torch.tensor([[4, 5]])
    locations = torch.rand(1, 3, 2, 1, 2, 2, generator=G, dtype=torch.float64)
    weights = torch.rand(1, 3, 2, 1, 2, generator=G, dtype=torch.float64)
    return value, detops.multi_scale_deformable_attention(value, shapes, locations, weights)


ATOMIC = {
    "roi_align": _roi_align,
    "roi_align_rotated": _roi_align_rotated,
    "roi_pool": _roi_pool,
    "ps_roi_align": _ps_roi_align,
    "ps_roi_pool": _ps_roi_pool,
    "multi_level_roi_align": _multi_level_roi_align,
    "deform_conv2d": _deform_conv2d,
    "multi_scale_deformable_attention": _multi_scale_deformable_attention,
}


def _sigmoid_focal_loss():
    x = torch.randn(6, 3, generator=G, dtype=torch.float64, requires_grad=True)
    return x, detops.sigmoid_focal_loss(x, (torch.rand(6, 3, generator=G) < 0.3).double())


def _generalized_box_iou():
    boxes = torch.tensor([[0, 0, 4, 4.0], [1, 1, 6, 5]], dtype=torch.float64, requires_grad=True)
    return boxes, detops.generalized_box_iou(boxes, boxes.detach() + 0.5)


# Backward kernels without atomics on every device: never an alert.
GATHERING = {"sigmoid_focal_loss": _sigmoid_focal_loss, "generalized_box_iou": _generalized_box_iou}


@pytest.fixture
def deterministic():
    """Sets torch.use_deterministic_algorithms for the test, restoring it after."""
    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield torch.use_deterministic_algorithms
    torch.use_deterministic_algorithms(was, warn_only=warn_only)


@pytest.fixture
def cpu_adds_with_atomics(monkeypatch):
    monkeypatch.setattr(detops_core.autograd, "ATOMIC_DEVICE_TYPES", ("cpu",))


def _grad(case):
    G.manual_seed(0)  # the same inputs on every call
    leaf, out = case()
    return torch.autograd.grad(out, leaf, torch.ones_like(out))[0]


@pytest.mark.parametrize("op", sorted(ATOMIC))
def test_atomic_backward_raises_naming_the_op(op, deterministic, cpu_adds_with_atomics):
    deterministic(True)
    with pytest.raises(RuntimeError, match=rf"The backward of detops\.{op} on cpu .*use_deterministic_algorithms"):
        _grad(ATOMIC[op])


@pytest.mark.parametrize("op", sorted(ATOMIC))
def test_atomic_backward_warns_with_warn_only_and_still_runs(op, deterministic, cpu_adds_with_atomics):
    deterministic(False)
    expected = _grad(ATOMIC[op])
    deterministic(True, warn_only=True)
    with pytest.warns(UserWarning, match=rf"The backward of detops\.{op} on cpu"):
        got = _grad(ATOMIC[op])
    assert torch.equal(got, expected)


@pytest.mark.parametrize("op", sorted(ATOMIC))
def test_no_alert_without_the_flag(op, deterministic, cpu_adds_with_atomics):
    deterministic(False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _grad(ATOMIC[op])


@pytest.mark.parametrize("op", sorted(ATOMIC) + sorted(GATHERING))
def test_cpu_gradients_are_deterministic_and_never_alert(op, deterministic):
    case = {**ATOMIC, **GATHERING}[op]
    deterministic(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first, second = _grad(case), _grad(case)
    assert first.abs().sum() > 0 and torch.equal(first, second)


@pytest.mark.parametrize("op", sorted(GATHERING))
def test_gathering_backward_never_alerts(op, deterministic, cpu_adds_with_atomics):
    deterministic(True)
    _grad(GATHERING[op])
