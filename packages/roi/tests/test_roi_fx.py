"""torch.fx.symbolic_trace: the RoI functions are leaves of the graph (call_function nodes
of the detops wrappers, as torchvision's are), in the modules and in user code, and the
traced module computes what the eager one does."""

import pytest
import torch
import torch.fx

import detops_roi
from detops_roi import PSRoIAlign, PSRoIPool, RoIAlign, RoIAlignRotated, RoIPool


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 8, 12, 12, generator=g)
    rois = torch.tensor([[0, 1.0, 1.5, 7.0, 9.0], [1, 0.0, 2.0, 11.0, 5.5], [1, 3.0, 3.0, 4.0, 4.0]])
    return x, rois


def _called(graph_module):
    return [n.target for n in graph_module.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize(
    "module, function",
    [
        (RoIAlign(3, 0.5, 2, aligned=True), detops_roi.roi_align),
        (RoIPool((2, 3), 1.0), detops_roi.roi_pool),
        (PSRoIAlign(2, 1.0, -1), detops_roi.ps_roi_align),
        (PSRoIPool(2, 0.5), detops_roi.ps_roi_pool),
    ],
)
def test_modules_trace_with_the_op_as_leaf(module, function):
    x, rois = _inputs()
    traced = torch.fx.symbolic_trace(module)
    assert _called(traced) == [function]
    assert torch.equal(traced(x, rois), module(x, rois))
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    assert torch.equal(traced(x, boxes), module(x, rois))


def test_rotated_module_traces():
    x, rois = _inputs()
    rotated = torch.cat([rois, torch.full((3, 1), 30.0)], dim=1)
    module = RoIAlignRotated(2, 1.0, 2)
    traced = torch.fx.symbolic_trace(module)
    assert _called(traced) == [detops_roi.roi_align_rotated]
    assert torch.equal(traced(x, rotated), module(x, rotated))


class _UserModel(torch.nn.Module):
    def forward(self, x, rois):
        a = detops_roi.roi_align(x, rois, 2, 0.5, 2, True) + detops_roi.roi_pool(x, rois, 2, 0.5)
        b = detops_roi.ps_roi_align(x, rois, 2, 0.5) + detops_roi.ps_roi_pool(x, rois, 2)
        per_image = detops_roi.roi_align(x, [rois[:1, 1:], rois[1:, 1:]], 2)
        return a.sum() + b.sum() + per_image.sum()


def test_functions_in_user_code():
    x, rois = _inputs()
    model = _UserModel()
    traced = torch.fx.symbolic_trace(model)
    ops = [t for t in _called(traced) if getattr(t, "__module__", "") == "detops_roi"]
    assert [op.__name__ for op in ops] == ["roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool", "roi_align"]
    assert torch.equal(traced(x, rois), model(x, rois))


def test_traced_module_scripts():
    x, rois = _inputs()
    traced = torch.fx.symbolic_trace(RoIAlign(2, 1.0, 2))
    assert torch.equal(torch.jit.script(traced)(x, rois), traced(x, rois))
