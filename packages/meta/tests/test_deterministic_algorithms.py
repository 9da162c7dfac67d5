"""torch.use_deterministic_algorithms and detops' gradients.

The CUDA backward kernels of eight ops add many threads' contributions into one gradient
element. By default they do so with float atomics, whose sums depend on the order the
threads run; under the flag, autograd passes `deterministic=True` to their backward ops and
the kernels sum in fixed point instead (detops/scatter_add.cuh), the same bits in every
order. Their bits under shuffled block orders are tested in the CUDA emulation
(test_block_order_cuda_emulation.py of each package). The CPU kernels are deterministic
either way (one writer per gradient element).

Here, on the CPU: autograd reads the flag at the time of the backward, in eager mode and
under torch.compile, and hands it to the backward op; no op raises or warns under it.
"""

import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import detops

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


# Backward kernels without atomics on every device (no deterministic argument).
GATHERING = {"sigmoid_focal_loss": _sigmoid_focal_loss, "generalized_box_iou": _generalized_box_iou}


@pytest.fixture
def deterministic():
    """Sets torch.use_deterministic_algorithms for the test, restoring it after."""
    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield torch.use_deterministic_algorithms
    torch.use_deterministic_algorithms(was, warn_only=warn_only)


def _grad(case):
    G.manual_seed(0)  # the same inputs on every call
    leaf, out = case()
    return torch.autograd.grad(out, leaf, torch.ones_like(out))[0]


class _BackwardCalls(TorchDispatchMode):
    """The `deterministic` argument of every detops backward op called while active."""

    def __init__(self):
        super().__init__()
        self.deterministic = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name.startswith("detops::_") and name.endswith("_backward"):
            arguments = func._schema.arguments
            values = {
                a.name: args[i] if i < len(args) else kwargs.get(a.name, a.default_value)
                for i, a in enumerate(arguments)
            }
            self.deterministic[name[len("detops::_") : -len("_backward")]] = values["deterministic"]
        return func(*args, **kwargs)


@pytest.mark.parametrize("flag", [False, True])
@pytest.mark.parametrize("op", sorted(ATOMIC))
def test_backward_op_gets_the_flag(op, flag, deterministic):
    deterministic(flag)
    with _BackwardCalls() as calls:
        _grad(ATOMIC[op])
    assert calls.deterministic == {op: flag}


COMPILED = {
    "roi_align": (lambda x: detops.roi_align(x, _rois(), 2, sampling_ratio=2), (1, 8, 10, 10)),
    "deform_conv2d": (
        lambda x: detops.deform_conv2d(x, torch.ones(1, 18, 8, 8).double(), torch.ones(4, 8, 3, 3).double()),
        (1, 8, 10, 10),
    ),
    "multi_scale_deformable_attention": (
        lambda v: detops.multi_scale_deformable_attention(
            v,
            torch.tensor([[4, 5]]),
            torch.full((1, 3, 2, 1, 2, 2), 0.3).double(),
            torch.full((1, 3, 2, 1, 2), 0.5).double(),
        ),
        (1, 20, 2, 4),
    ),
}


@pytest.mark.parametrize("op", sorted(COMPILED))
def test_compiled_backward_gets_the_flag_of_each_call(op, deterministic):
    # The backward graph is traced with the forward; the flag is among torch.compile's guards,
    # so each setting gets its own graph, with its own `deterministic` argument.
    function, shape = COMPILED[op]
    compiled = torch.compile(function, backend="aot_eager", fullgraph=True)
    leaf = torch.randn(shape, generator=G, dtype=torch.float64, requires_grad=True)
    for flag in (False, True, False):
        deterministic(flag)
        out = compiled(leaf)
        with _BackwardCalls() as calls:  # (a dispatch mode cannot be active while compiling)
            (got,) = torch.autograd.grad(out, leaf, torch.ones_like(out))
        assert calls.deterministic == {op: flag}
        out = function(leaf)
        assert torch.equal(got, torch.autograd.grad(out, leaf, torch.ones_like(out))[0])


@pytest.mark.parametrize("warn_only", [False, True])
@pytest.mark.parametrize("op", sorted(ATOMIC) + sorted(GATHERING))
def test_cpu_gradients_are_deterministic_and_never_alert(op, warn_only, deterministic):
    case = {**ATOMIC, **GATHERING}[op]
    deterministic(False)
    default = _grad(case)
    deterministic(True, warn_only=warn_only)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first, second = _grad(case), _grad(case)
    assert first.abs().sum() > 0 and torch.equal(first, second) and torch.equal(first, default)
