"""nms of quantized CPU boxes and scores against torchvision 0.29.1 (which ranks and
intersects the raw integers), and the refusals."""

import pytest
import torch

from detops_nms import nms

tv_ops = pytest.importorskip("torchvision.ops", reason="torchvision is not installed (the oracle of quantized NMS)")
if not hasattr(torch, "quint8"):
    pytest.skip("this torch has no quantized dtypes", allow_module_level=True)


def _boxes(seed, n=150):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.rand(n, 4, generator=g) * 20
    boxes[:, 2:] += boxes[:, :2] * torch.rand(n, 2, generator=g)
    boxes[: n // 8] = torch.rand(n // 8, 4, generator=g) * 20  # reversed and degenerate boxes too
    boxes[-2:] = boxes[-4:-2]  # duplicates
    scores = torch.rand(n, generator=g) * 10
    scores[-6:-3] = scores[-3:]  # ties
    return boxes, scores


@pytest.mark.parametrize("qdtype", (torch.quint8, torch.qint8, torch.qint32))
@pytest.mark.parametrize("scale, zero_point", ((1.0, 0), (0.5, 10), (0.1, 50), (2.0, 3)))
def test_matches_torchvision(qdtype, scale, zero_point):
    for seed, threshold in enumerate((0.0, 0.3, 0.5, 0.7, 1.0)):
        boxes, scores = _boxes(seed)
        qb = torch.quantize_per_tensor(boxes, scale, zero_point, qdtype)
        qs = torch.quantize_per_tensor(scores, scale * 0.3, zero_point, qdtype)
        expected = tv_ops.nms(qb, qs, threshold)
        assert torch.equal(nms(qb, qs, threshold), expected)
        assert torch.equal(nms(qb, qs, threshold, max_output=3), expected[:3])


def test_empty():
    qb = torch.quantize_per_tensor(torch.empty(0, 4), 1.0, 0, torch.quint8)
    qs = torch.quantize_per_tensor(torch.empty(0), 1.0, 0, torch.quint8)
    assert torch.equal(nms(qb, qs, 0.5), tv_ops.nms(qb, qs, 0.5))


def test_refusals():
    boxes, scores = _boxes(0)
    qb = torch.quantize_per_tensor(boxes, 1.0, 0, torch.quint8)
    qs = torch.quantize_per_tensor(scores, 1.0, 0, torch.quint8)
    with pytest.raises(RuntimeError, match="must both be one of .*, got scores of dtype torch.float32"):
        nms(qb, scores, 0.5)
    # torchvision fails on the sub-byte dtypes too (their integer view is not [N, 4]).
    for sub_byte in (torch.quint4x2, torch.quint2x4):
        with pytest.raises(RuntimeError, match="got boxes of dtype " + str(sub_byte)):
            nms(torch.quantize_per_tensor(boxes, 1.0, 0, sub_byte), qs, 0.5)
    with pytest.raises(RuntimeError, match="same dtype"):
        nms(qb, torch.quantize_per_tensor(scores, 1.0, 0, torch.qint8), 0.5)
    big = torch.quantize_per_tensor(boxes * 2**21, 1.0, 0, torch.qint32)
    with pytest.raises(RuntimeError, match="2\\^24"):
        nms(big, torch.quantize_per_tensor(scores, 1.0, 0, torch.qint32), 0.5)
    with pytest.raises(RuntimeError, match=r"boxes"):
        nms(qb[:, :3], qs, 0.5)
