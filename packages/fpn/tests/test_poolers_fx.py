"""torch.fx.symbolic_trace of MultiScaleRoIAlign: its steps are leaves (as torchvision's),
the traced module pools what the eager one does, and tracing leaves the module's inferred
scales alone (torchvision's stores proxies there, and cannot trace a pooler once used)."""

import pytest
import torch
import torch.fx

from detops_fpn import MultiScaleRoIAlign


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = {"p2": torch.rand(2, 4, 16, 16, generator=g), "p3": torch.rand(2, 4, 8, 8, generator=g)}
    boxes = [
        torch.tensor([[1.0, 1, 20, 20], [0, 0, 60, 60], [3, 3, 5, 9]]),
        torch.tensor([[10.0, 2, 50, 40]]),
    ]
    return x, boxes, [(64, 64), (60, 64)]


def _names(traced):
    return [getattr(n.target, "__name__", str(n.target)) for n in traced.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize("featmap_names", [["p2", "p3"], ["p3"]])
@pytest.mark.parametrize("used_before", [False, True])
def test_traces_fresh_and_used(featmap_names, used_before):
    x, boxes, shapes = _inputs()
    pooler = MultiScaleRoIAlign(featmap_names, (3, 2), 2)
    expected = MultiScaleRoIAlign(featmap_names, (3, 2), 2)(x, boxes, shapes)
    if used_before:
        pooler(x, boxes, shapes)
    traced = torch.fx.symbolic_trace(pooler)
    names = _names(traced)
    assert names[0] == "_filter_input" and names[-1] == "_multi_scale_roi_align"
    assert ("_setup_scales" in names) != used_before
    assert (pooler.scales is None) != used_before  # tracing stored nothing
    assert torch.equal(traced(x, boxes, shapes), expected)
    assert torch.equal(pooler(x, boxes, shapes), expected)
