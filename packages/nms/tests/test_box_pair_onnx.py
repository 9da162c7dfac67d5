"""ONNX export of the pairwise generalized_box_iou, distance_box_iou and complete_box_iou
(detops_nms.onnx), run in ONNX Runtime and compared with detops eager on random,
degenerate, NaN, infinite and huge boxes, with dynamic box counts."""

import numpy as np
import pytest
import torch
from box_pair_reference import adversarial_boxes, random_boxes

import detops_nms
from detops_core.testing import onnx_session

onnx = pytest.importorskip("detops_nms.onnx", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")

NAMES = ["generalized_box_iou", "distance_box_iou", "complete_box_iou"]


class Pairwise(torch.nn.Module):
    def __init__(self, name, eps=None):
        super().__init__()
        self.fn, self.eps = getattr(detops_nms, name), eps

    def forward(self, boxes1, boxes2):
        return self.fn(boxes1, boxes2) if self.eps is None else self.fn(boxes1, boxes2, self.eps)


def _sets(n, m, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    extra = adversarial_boxes()
    a = torch.cat((random_boxes(n, g), extra[: n % 16]))
    b = torch.cat((extra[m % 16 :], random_boxes(m, g)))
    return a.to(dtype), b.to(dtype)


def _dims():
    return ({0: torch.export.Dim("n")}, {0: torch.export.Dim("m")})


def _check(got, expected, exact):
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    if exact:
        np.testing.assert_array_equal(got, expected)
    else:  # Atan: ONNX Runtime's and the C library's may differ in the last place
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_matches_eager(name, dtype):
    eps = None if name == "generalized_box_iou" else 0.01
    a, b = _sets(9, 7, 1, dtype)
    model = Pairwise(name, eps)
    if name == "complete_box_iou" and dtype == torch.float64:
        # The graph is standard ONNX (Atan takes double), but ONNX Runtime's CPU provider has
        # no float64 Atan kernel: check the exported graph instead of running it.
        program = torch.onnx.export(
            model, (a, b), dynamo=True, custom_translation_table=onnx.translation_table(), dynamic_shapes=_dims()
        )
        types = {n.op_type for n in program.model_proto.graph.node}
        assert "Atan" in types and not any(t.startswith("detops") for t in types)
        return
    run = onnx_session(model, (a, b), onnx.translation_table(), _dims())
    for n, m, seed in ((9, 7, 1), (30, 3, 2), (1, 12, 3), (0, 4, 4), (5, 0, 5)):
        a, b = _sets(n, m, seed, dtype)
        (got,) = run(a, b)
        expected = model(a, b).numpy()
        _check(got, expected, exact=name != "complete_box_iou")
