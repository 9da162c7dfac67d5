"""torch.fx.symbolic_trace of user code calling nms and batched_nms: both are leaves
(call_function nodes of the detops wrappers), and the traced module gives the eager result."""

import torch
import torch.fx

import detops_nms


class _Model(torch.nn.Module):
    def forward(self, boxes, scores, idxs):
        keep = detops_nms.nms(boxes, scores, 0.5)
        per_class = detops_nms.batched_nms(boxes, scores, idxs, 0.4)
        return keep, per_class


def test_nms_and_batched_nms_are_leaves():
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(40, 4, generator=g) * 10
    boxes[:, 2:] += boxes[:, :2]
    scores = torch.rand(40, generator=g)
    idxs = torch.randint(0, 3, (40,), generator=g)
    model = _Model()
    traced = torch.fx.symbolic_trace(model)
    called = [n.target for n in traced.graph.nodes if n.op == "call_function"]
    assert called == [detops_nms.nms, detops_nms.batched_nms]
    for got, expected in zip(traced(boxes, scores, idxs), model(boxes, scores, idxs)):
        assert torch.equal(got, expected)
