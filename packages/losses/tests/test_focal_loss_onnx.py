"""ONNX export of sigmoid_focal_loss (the `onnx` extra) run in ONNX Runtime against eager:
every reduction, alpha and gamma variant, float32 and float64, dynamic sizes; and the graph
is the standard-operator sequence that detops_losses.onnx documents, nothing else."""

import collections

import pytest
import torch
from focal_loss_reference import adversarial_case, make_case

import detops_losses
from detops_core.testing import onnx_session


def _table():
    pytest.importorskip("onnxscript", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")
    import detops_losses.onnx

    return detops_losses.onnx.translation_table()


class FocalLoss(torch.nn.Module):
    def __init__(self, alpha=0.25, gamma=2.0, reduction="none"):
        super().__init__()
        self.alpha, self.gamma, self.reduction = alpha, gamma, reduction

    def forward(self, inputs, targets):
        return detops_losses.sigmoid_focal_loss(inputs, targets, self.alpha, self.gamma, self.reduction)


PARAMS = [(0.25, 2.0), (-1.0, 2.0), (0.25, 0.0), (0.6, 1.5)]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha,gamma", PARAMS, ids=[f"alpha{a}_gamma{g}" for a, g in PARAMS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_onnx_matches_eager(dtype, alpha, gamma, reduction):
    table = _table()
    model = FocalLoss(alpha, gamma, reduction)
    n, c = torch.export.Dim("n"), torch.export.Dim("c")
    args = make_case((21, 6), dtype=dtype, soft=True)
    run = onnx_session(model, args, table, dynamic_shapes=({0: n, 1: c}, {0: n, 1: c}))
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    for case in (args, make_case((9, 13), dtype=dtype, seed=4, scale=6.0), adversarial_case(dtype)):
        (got,) = run(*case)
        torch.testing.assert_close(torch.from_numpy(got), model(*case), **tol)


def _op_types(model, args):
    pytest.importorskip("onnxscript", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")
    program = torch.onnx.export(model.eval(), args, dynamo=True, custom_translation_table=_table(), verbose=False)
    graph = program.model_proto.graph
    assert all(node.domain in ("", "ai.onnx") for node in graph.node), [n.domain for n in graph.node]
    return collections.Counter(node.op_type for node in graph.node if node.op_type != "Constant")


def test_onnx_graph_is_the_documented_sequence():
    args = make_case((5, 4))
    # float32 in and out: the exporter's optimiser drops the no-op Cast and CastLike.
    # Always: -x, sigmoid(x), sigmoid(-x), 1 - t, (1 - t) x + softplus(-x), t sn + (1 - t) s.
    core = {"Neg": 1, "Sigmoid": 2, "Sub": 1, "Softplus": 1, "Add": 2, "Mul": 3}
    # gamma 2: m * m and ce * m^2; alpha: alpha t + (1 - alpha)(1 - t) and a * loss.
    default = _op_types(FocalLoss(), args)
    assert default == collections.Counter({**core, "Mul": core["Mul"] + 5, "Add": core["Add"] + 1})
    # gamma 1.5: Pow and ce * m^gamma; no weighting; the sum.
    plain = _op_types(FocalLoss(-1.0, 1.5, "sum"), args)
    assert plain == collections.Counter({**core, "Mul": core["Mul"] + 1, "Pow": 1, "ReduceSum": 1})
