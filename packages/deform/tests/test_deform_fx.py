"""torch.fx.symbolic_trace: deform_conv2d is a leaf (a call_function node of the detops
wrapper) in DeformConv2d and in user code, and the traced module gives the eager result
(torchvision's DeformConv2d does not trace: its wrapper branches on tensor values)."""

import torch
import torch.fx

import detops_deform


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.rand(3, 4, 3, 3))

    def forward(self, x, offset, mask):
        return detops_deform.deform_conv2d(x, offset, self.weight, padding=1, mask=mask)


def _called(traced):
    return [n.target for n in traced.graph.nodes if n.op == "call_function"]


def test_module_and_user_code_trace():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 4, 5, 5, generator=g)
    offset = torch.randn(2, 18, 5, 5, generator=g)
    mask = torch.rand(2, 9, 5, 5, generator=g)
    layer = detops_deform.DeformConv2d(4, 3, 3, padding=1)
    traced = torch.fx.symbolic_trace(layer)
    assert _called(traced) == [detops_deform.deform_conv2d]
    assert torch.equal(traced(x, offset, mask), layer(x, offset, mask))
    assert torch.equal(traced(x, offset), layer(x, offset))
    model = _Model()
    traced = torch.fx.symbolic_trace(model)
    assert _called(traced) == [detops_deform.deform_conv2d]
    assert torch.equal(traced(x, offset, mask), model(x, offset, mask))
