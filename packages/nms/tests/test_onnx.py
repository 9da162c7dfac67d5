"""ONNX export of nms and batched_nms (detops_nms.onnx), run in ONNX Runtime and compared
with detops eager: the kept indices must be identical, in the same order."""

import numpy as np
import pytest
import torch

import detops_nms
from detops_core.testing import onnx_session

onnx = pytest.importorskip("detops_nms.onnx", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")


class Nms(torch.nn.Module):
    def __init__(self, iou_threshold):
        super().__init__()
        self.iou_threshold = iou_threshold

    def forward(self, boxes, scores):
        return detops_nms.nms(boxes, scores, self.iou_threshold)


class BatchedNms(Nms):
    def forward(self, boxes, scores, idxs):
        return detops_nms.batched_nms(boxes, scores, idxs, self.iou_threshold)


def _boxes(n, seed, dtype=torch.float32):
    """RPN-like boxes with ties, heavy overlap, and a few adversarial rows."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 200
    wh = torch.rand(n, 2, generator=g) * 60 + 1
    boxes = torch.cat((xy, xy + wh), dim=1)
    scores = (torch.rand(n, generator=g) * 10).round() / 10  # many ties
    if n >= 8:
        boxes[1] = boxes[0]  # identical boxes, IoU 1
        boxes[2, 2] = boxes[2, 0] - 5  # x2 < x1
        boxes[3, 1] = float("nan")
        boxes[4] = torch.tensor([5.0, 5.0, 5.0, 30.0])  # zero width
        boxes[5, 2:] = float("inf")
        scores[6] = float("nan")
        scores[7] = float("-inf")
    return boxes.to(dtype), scores.to(dtype)


def _dims(count):
    n = torch.export.Dim("n")
    return tuple({0: n} for _ in range(count))


@pytest.mark.parametrize("iou_threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_eager(iou_threshold):
    boxes, scores = _boxes(300, seed=1)
    run = onnx_session(Nms(iou_threshold), (boxes, scores), onnx.translation_table(), _dims(2))
    # Re-run with box counts other than the exported one, including none.
    for n, seed in ((300, 1), (123, 2), (64, 3), (1, 4), (0, 5)):
        b, s = _boxes(n, seed)
        (got,) = run(b, s)
        np.testing.assert_array_equal(got, detops_nms.nms(b, s, iou_threshold).numpy())


def test_iou_exactly_at_the_threshold():
    # Two boxes with IoU exactly 0.5 (in float32 and in double): equal does not suppress.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0], [10.0, 10.0, 11.0, 11.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    # And one at float32(0.3), just above the double 0.3: eager suppresses.
    third = torch.tensor([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 3.0000001192092896, 1.0]])
    for b, s, t in ((boxes, scores, 0.5), (third, torch.tensor([0.9, 0.8]), 0.3)):
        (got,) = onnx_session(Nms(t), (b, s), onnx.translation_table())(b, s)
        np.testing.assert_array_equal(got, detops_nms.nms(b, s, t).numpy())
    assert detops_nms.nms(third, torch.tensor([0.9, 0.8]), 0.3).tolist() == [0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_narrow_dtypes_compute_in_float32(dtype):
    boxes, scores = _boxes(200, seed=6, dtype=dtype)
    (got,) = onnx_session(Nms(0.5), (boxes, scores), onnx.translation_table())(boxes, scores)
    np.testing.assert_array_equal(got, detops_nms.nms(boxes, scores, 0.5).numpy())


@pytest.mark.parametrize("classes", [1, 3, 80, 1000])
def test_batched_nms_matches_eager(classes):
    boxes, scores = _boxes(400, seed=classes)
    g = torch.Generator().manual_seed(classes)
    idxs = torch.randint(0, classes, (400,), generator=g) * 7919 - 5  # sparse, negative categories
    run = onnx_session(BatchedNms(0.5), (boxes, scores, idxs), onnx.translation_table(), _dims(3))
    for n in (400, 97, 0):
        (got,) = run(boxes[:n], scores[:n], idxs[:n])
        np.testing.assert_array_equal(got, detops_nms.batched_nms(boxes[:n], scores[:n], idxs[:n], 0.5).numpy())


def test_batched_nms_huge_coordinates_stay_per_class():
    # The coordinate-offset trick breaks here; the per-class score rows do not.
    boxes = torch.tensor([[0.0, 0.0, 1e30, 1e30], [0.0, 0.0, 1e30, 1e30], [1.0, 1.0, 2.0, 2.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    idxs = torch.tensor([0, 1, 0])
    (got,) = onnx_session(BatchedNms(0.5), (boxes, scores, idxs), onnx.translation_table())(boxes, scores, idxs)
    np.testing.assert_array_equal(got, detops_nms.batched_nms(boxes, scores, idxs, 0.5).numpy())
    assert got.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "model, args, words",
    [
        (Nms(-0.1), _boxes(10, 0), "iou_threshold=-0.1"),
        (Nms(float("nan")), _boxes(10, 0), "iou_threshold=nan"),
        (Nms(0.5), _boxes(10, 0, torch.float64), "float64"),
        (BatchedNms(-1.0), (*_boxes(10, 0), torch.zeros(10, dtype=torch.int64)), "iou_threshold=-1.0"),
    ],
)
def test_inexact_exports_raise(model, args, words):
    with pytest.raises(Exception, match=words) as info:
        onnx_session(model, args, onnx.translation_table())
    assert "detops.onnx" in str(info.value)


class LimitedNms(Nms):
    def __init__(self, iou_threshold, max_output):
        super().__init__(iou_threshold)
        self.max_output = max_output

    def forward(self, boxes, scores):
        return detops_nms.nms(boxes, scores, self.iou_threshold, max_output=self.max_output)


class LimitedBatchedNms(LimitedNms):
    def forward(self, boxes, scores, idxs):
        return detops_nms.batched_nms(boxes, scores, idxs, self.iou_threshold, max_output=self.max_output)


@pytest.mark.parametrize("max_output", [0, 1, 5, 40, 1000])
def test_max_output_matches_eager(max_output):
    # NonMaxSuppression's max_output_boxes_per_class stops its greedy pass at k boxes, which
    # for nms are the first k kept; batched_nms slices the unlimited result.
    boxes, scores = _boxes(300, seed=7)
    run = onnx_session(LimitedNms(0.5, max_output), (boxes, scores), onnx.translation_table(), _dims(2))
    for n, seed in ((300, 7), (50, 8), (0, 9)):
        b, s = _boxes(n, seed)
        (got,) = run(b, s)
        np.testing.assert_array_equal(got, detops_nms.nms(b, s, 0.5, max_output=max_output).numpy())
    idxs = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(max_output))
    run = onnx_session(LimitedBatchedNms(0.5, max_output), (boxes, scores, idxs), onnx.translation_table(), _dims(3))
    (got,) = run(boxes, scores, idxs)
    np.testing.assert_array_equal(got, detops_nms.batched_nms(boxes, scores, idxs, 0.5, max_output=max_output).numpy())


class SoftNms(torch.nn.Module):
    def forward(self, boxes, scores):
        return detops_nms.soft_nms(boxes, scores)


class BatchedSoftNms(torch.nn.Module):
    def forward(self, boxes, scores, idxs):
        return detops_nms.batched_soft_nms(boxes, scores, idxs, method="linear")


@pytest.mark.parametrize(
    "model, args, name",
    [
        (SoftNms(), _boxes(10, 0), "soft_nms"),
        (BatchedSoftNms(), (*_boxes(10, 0), torch.zeros(10, dtype=torch.int64)), "batched_soft_nms"),
    ],
)
def test_ops_without_an_exact_translation_are_refused(model, args, name):
    with pytest.raises(Exception, match=f"detops.onnx: {name} cannot be exported"):
        onnx_session(model, args, onnx.translation_table())


class PerImage(torch.nn.Module):
    def __init__(self, max_output=None):
        super().__init__()
        self.max_output = max_output

    def forward(self, boxes, scores):
        return detops_nms.nms_per_image(boxes, scores, 0.5, max_output=self.max_output)


class PerImageByClass(PerImage):
    def forward(self, boxes, scores, idxs):
        return detops_nms.nms_per_image(boxes, scores, 0.5, idxs, max_output=self.max_output)


def _batch(images, n, seed):
    """`images` images of `n` boxes each (ties, NaN and degenerate boxes included) and classes."""
    pairs = [_boxes(n, seed + i) for i in range(images)]
    boxes = torch.stack([b for b, _ in pairs]) if images else torch.zeros(0, n, 4)
    scores = torch.stack([s for _, s in pairs]) if images else torch.zeros(0, n)
    classes = torch.randint(0, 3, (images, n), generator=torch.Generator().manual_seed(seed))
    return boxes, scores, classes


@pytest.mark.parametrize("max_output", [None, 0, 1, 5])
@pytest.mark.parametrize("by_class", [False, True])
def test_nms_per_image_matches_eager(max_output, by_class):
    boxes, scores, classes = _batch(3, 40, seed=7)
    dims = ({0: torch.export.Dim("b"), 1: torch.export.Dim("n")},) * 2
    if by_class:
        model, args, dims = PerImageByClass(max_output), (boxes, scores, classes), (*dims, dims[0])
    else:
        model, args = PerImage(max_output), (boxes, scores)
    run = onnx_session(model, args, onnx.translation_table(), dims)
    for images, n, seed in ((3, 40, 7), (5, 17, 8), (1, 9, 9), (2, 1, 10), (4, 0, 11)):
        boxes, scores, classes = _batch(images, n, seed)
        case = (boxes, scores, classes) if by_class else (boxes, scores)
        (got,) = run(*case)
        np.testing.assert_array_equal(got.reshape(-1, 2), model(*case).numpy())
