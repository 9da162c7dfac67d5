"""detops.onnx: one translation table for every op, export() with a user's table merged in,
and `import detops` working without the onnx extra."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import detops

onnx = pytest.importorskip("detops.onnx", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")


def test_table_covers_every_public_op():
    # Every registered detops op but the backward ops ("_..."): a translation, or a
    # translation that refuses with the op's name; none is left to a generic export error.
    names = {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("detops::")}
    public = {getattr(torch.ops.detops, n).default for n in names if not n.startswith("_")}
    assert len(public) >= 17  # the ops of this writing: a failed load would shrink the set
    assert set(onnx.translation_table()) == public


def test_import_detops_does_not_need_onnx():
    code = "import sys, detops; assert 'onnxscript' not in sys.modules and 'onnx' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


class EveryOp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.deform = detops.DeformConv2d(4, 4, 3, padding=1)
        self.fpn = detops.FeaturePyramidNetwork([4, 4], 4)

    def forward(self, x, boxes, scores, labels):
        rois = torch.cat((torch.zeros_like(boxes[:, :1]), boxes), dim=1)
        offset = torch.zeros(x.shape[0], 18, x.shape[2], x.shape[3])
        y = self.deform(x, offset)
        pyramid = self.fpn({"a": y, "b": y[:, :, ::2, ::2]})
        keep = detops.batched_nms(boxes, scores, labels, 0.5)
        return (
            detops.nms(boxes, scores, 0.5),
            keep,
            detops.roi_align(pyramid["a"], rois, 3, 0.5, 2, True),
            detops.roi_pool(y, rois, 2, 0.5),
            detops.ps_roi_align(y, rois, 2, 0.5, 2),
            detops.ps_roi_pool(y, rois, 2, 0.5),
        )


def test_export_runs_every_op_in_onnx_runtime(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 16, 20, generator=g)
    xy = torch.rand(30, 2, generator=g) * 30
    boxes = torch.cat((xy, xy + torch.rand(30, 2, generator=g) * 20 + 1), dim=1)
    scores, labels = torch.rand(30, generator=g), torch.randint(0, 3, (30,), generator=g)
    model = EveryOp().eval()
    path = tmp_path / "every_op.onnx"
    onnx.export(model, (x, boxes, scores, labels), str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, dict(zip(names, (t.numpy() for t in (x, boxes, scores, labels)))))
    for a, b in zip(got, model(x, boxes, scores, labels)):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_a_users_table_is_merged_and_wins():
    called = []
    base = onnx.translation_table()[torch.ops.detops.nms.default]

    def mine(boxes, scores, iou_threshold):
        called.append(iou_threshold)
        return base(boxes, scores, iou_threshold)

    class Nms(torch.nn.Module):
        def forward(self, boxes, scores):
            return detops.nms(boxes, scores, 0.25), detops.roi_align(boxes[None, None], boxes[:1, :1].expand(1, 5), 1)

    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.1]])
    onnx.export(Nms(), (boxes, torch.tensor([0.9, 0.8])), custom_translation_table={torch.ops.detops.nms.default: mine})
    assert called == [0.25]


def test_export_of_a_compiled_module():
    class Pool(torch.nn.Module):
        def forward(self, x, rois):
            return detops.roi_align(x, rois, 3, 0.5, 2, True)

    x, rois = torch.randn(1, 3, 10, 10), torch.tensor([[0, 1.0, 1.0, 8.0, 8.0], [0, -2.0, 3.0, 5.0, 12.0]])
    program = onnx.export(torch.compile(Pool()), (x, rois))
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), (x, rois))})
    np.testing.assert_allclose(got, Pool()(x, rois).numpy(), rtol=1e-5, atol=1e-5)
