"""ONNX export of generalized_box_iou_loss, distance_box_iou_loss and complete_box_iou_loss
(detops_losses.onnx), run in ONNX Runtime and compared with detops eager on random and
adversarial pairs (degenerate, NaN, infinite, huge), every reduction, dynamic pair counts."""

import numpy as np
import pytest
import torch
from box_iou_loss_reference import adversarial_pairs, random_pairs

import detops_losses
from detops_core.testing import onnx_session

onnx = pytest.importorskip(
    "detops_losses.onnx", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed"
)

NAMES = ["generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"]


class Loss(torch.nn.Module):
    def __init__(self, name, reduction, eps):
        super().__init__()
        self.fn, self.reduction, self.eps = getattr(detops_losses, name), reduction, eps

    def forward(self, boxes1, boxes2):
        return self.fn(boxes1, boxes2, self.reduction, self.eps)


def _pairs(n, seed, dtype, adversarial):
    a, b = random_pairs(n, torch.Generator().manual_seed(seed))
    if adversarial:
        x, y = adversarial_pairs()
        a, b = torch.cat((a, x)), torch.cat((b, y))
    return a.to(dtype), b.to(dtype)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_matches_eager(name, dtype, reduction):
    model = Loss(name, reduction, 0.01)
    adversarial = reduction == "none"  # NaN and inf make a reduced loss NaN or inf: nothing to compare
    a, b = _pairs(9, 1, dtype, adversarial)
    n = torch.export.Dim("n")
    dims = ({0: n}, {0: n})
    if name == "complete_box_iou_loss" and dtype == torch.float64:
        # Standard ONNX (Atan takes double), but ONNX Runtime's CPU provider has no float64
        # Atan kernel: check the exported graph instead of running it.
        program = torch.onnx.export(
            model, (a, b), dynamo=True, custom_translation_table=onnx.translation_table(), dynamic_shapes=dims
        )
        types = {node.op_type for node in program.model_proto.graph.node}
        assert "Atan" in types and not any(t.startswith("detops") for t in types)
        return
    run = onnx_session(model, (a, b), onnx.translation_table(), dims)
    exact = name != "complete_box_iou_loss" and reduction == "none"
    for count, seed in ((9, 1), (40, 2), (1, 3), (0, 4)):
        a, b = _pairs(count, seed, dtype, adversarial and count > 1)
        (got,) = run(a, b)
        expected = model(a, b).numpy()
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert np.array_equal(np.isnan(got), np.isnan(expected))
        if exact:
            np.testing.assert_array_equal(got, expected)
        else:  # Atan's last place; the runtime sums in the compute type where detops sums in double
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
