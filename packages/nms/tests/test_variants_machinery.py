"""soft_nms, batched_soft_nms, nms_per_image and max_output inside PyTorch's machinery:
opcheck, the fake kernels' errors, TorchScript, torch.compile(fullgraph), torch.export,
autocast."""

import pytest
import torch
from nms_reference import clustered_boxes
from soft_nms_reference import reference_nms_limited, reference_nms_per_image, reference_soft_nms

import detops_nms
from detops_core.testing import (
    assert_autocast_float32,
    assert_compiles,
    assert_exports,
    assert_fake_raises_like_native,
    assert_opcheck,
    assert_same,
    assert_scripts,
    devices,
)

ops = torch.ops.detops


def _problem(n=150, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    boxes, scores = clustered_boxes(n, g), torch.rand(n, generator=g)
    idxs = torch.randint(0, 4, (n,), generator=g)
    return boxes.to(device), scores.to(device), idxs.to(device)


def _batch(b=3, n=80, seed=0, device="cpu"):
    parts = [_problem(n, seed + i, device) for i in range(b)]
    return tuple(torch.stack(t) for t in zip(*parts))


@pytest.mark.parametrize("n", [0, 1, 150])
@pytest.mark.parametrize("device", devices())
def test_opcheck(device, n):
    boxes, scores, idxs = _problem(n, device=device)
    assert_opcheck(ops.nms.default, (boxes, scores, 0.5, 5))
    assert_opcheck(ops.batched_nms.default, (boxes, scores, idxs, 0.5, 0))
    assert_opcheck(ops.soft_nms.default, (boxes, scores, 0.3, 0.5, 0.001, "gaussian"))
    assert_opcheck(ops.batched_soft_nms.default, (boxes, scores, idxs, 0.3, 0.5, 0.01, "linear"))
    b, s, i = _batch(2, n, device=device)
    assert_opcheck(ops.nms_per_image.default, (b, s, i, 0.5, 7))
    assert_opcheck(ops.nms_per_image.default, (b, s, None, 0.5, None))


@pytest.mark.parametrize(
    "op, args",
    [
        (ops.nms.default, (torch.rand(3, 4), torch.rand(3), 0.5, -2)),
        (ops.batched_nms.default, (torch.rand(3, 4), torch.rand(3), torch.zeros(3, dtype=torch.int64), 0.5, -1)),
        (ops.soft_nms.default, (torch.rand(3, 4), torch.rand(3), 0.3, 0.5, 0.001, "box")),
        (ops.soft_nms.default, (torch.rand(3, 4), torch.rand(3), 0.3, 0.0, 0.001, "gaussian")),
        (
            ops.batched_soft_nms.default,
            (torch.rand(3, 4), torch.rand(3), torch.zeros(3, dtype=torch.int64), 0.3, -0.5, 0.0, "gaussian"),
        ),
        (ops.nms_per_image.default, (torch.rand(2, 3, 4), torch.rand(2, 3), None, 0.5, -3)),
        (ops.nms_per_image.default, (torch.rand(2, 3, 4), torch.rand(3, 2), None, 0.5, None)),
    ],
)
def test_fake_kernels_raise_like_native(op, args):
    assert_fake_raises_like_native(op, args)


@pytest.mark.parametrize("device", devices())
def test_torchscript_wrappers(device):
    boxes, scores, idxs = _problem(device=device)
    b, s, i = _batch(device=device)
    cpu = boxes.cpu(), scores.cpu()
    assert_scripts(detops_nms.nms, (boxes, scores, 0.5))
    scripted = assert_scripts(detops_nms.nms, (boxes, scores, 0.5, 4), reference_nms_limited(*cpu, 0.5, 4).to(device))
    assert torch.equal(scripted(boxes, scores, 0.5, max_output=4), scripted(boxes, scores, 0.5, 4))
    # The eager wrappers take max_output by keyword only, the scripted ones also by position.
    limited = detops_nms.batched_nms(boxes, scores, idxs, 0.5, max_output=3)
    assert_scripts(detops_nms.batched_nms, (boxes, scores, idxs.int(), 0.5, 3), limited)
    assert_scripts(detops_nms.nms_per_image, (b, s, 0.5, i, 2), detops_nms.nms_per_image(b, s, 0.5, i, max_output=2))
    assert_scripts(detops_nms.nms_per_image, (b, s, 0.5), reference_nms_per_image(b, s, 0.5).to(device))
    assert_scripts(detops_nms.soft_nms, (boxes, scores), [t.to(device) for t in reference_soft_nms(*cpu)])
    assert_scripts(detops_nms.batched_soft_nms, (boxes, scores, idxs, 0.3, 0.5, 0.01, "linear"))


@pytest.mark.parametrize("device", devices())
def test_scripted_callers_use_keywords(device):
    @torch.jit.script
    def top(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor) -> torch.Tensor:
        return detops_nms.batched_nms(boxes, scores, idxs, 0.5, max_output=5)

    boxes, scores, idxs = _problem(device=device)
    assert torch.equal(top(boxes, scores, idxs), detops_nms.batched_nms(boxes, scores, idxs, 0.5)[:5])


def _postprocess(boxes, scores, idxs):
    top = detops_nms.nms(boxes, scores, 0.5, max_output=10)
    keep, decayed = detops_nms.soft_nms(boxes, scores, method="linear")
    per_class, per_class_scores = detops_nms.batched_soft_nms(boxes, scores, idxs)
    return boxes[top] * 2, boxes[keep] * decayed[:, None], per_class_scores.sum() + per_class.sum()


def _per_image(boxes, scores, idxs):
    rows = detops_nms.nms_per_image(boxes, scores, 0.5, idxs, max_output=6)
    return boxes[rows[:, 0], rows[:, 1]] + 1


@pytest.mark.parametrize("device", devices())
def test_compile_fullgraph(device):
    assert_compiles(_postprocess, _problem(device=device), dynamic=False, rtol=1e-6, atol=1e-6)
    assert_compiles(_per_image, _batch(device=device), dynamic=False)


class _Module(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, boxes, scores, idxs):
        return self.fn(boxes, scores, idxs)


@pytest.mark.parametrize("device", devices())
def test_export(device):
    args = _problem(device=device)
    program = assert_exports(_Module(_postprocess), args)
    targets = {str(node.target) for node in program.graph.nodes}
    assert {"detops.nms.default", "detops.soft_nms.default", "detops.batched_soft_nms.default"} <= targets
    n = torch.export.Dim("n", min=2)
    dims = ({0: n}, {0: n}, {0: n})
    assert_exports(_Module(_postprocess), args, dynamic_shapes=dims, more_args=[_problem(90, seed=1, device=device)])
    b, m = torch.export.Dim("b"), torch.export.Dim("m", min=2)
    per_image_dims = ({0: b, 1: m}, {0: b, 1: m}, {0: b, 1: m})
    assert_exports(
        _Module(_per_image), _batch(device=device), dynamic_shapes=per_image_dims, more_args=[_batch(5, 40, 3, device)]
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("device", devices())
def test_autocast_computes_in_float32(device, dtype):
    boxes, scores, idxs = _problem(device=device)
    assert_autocast_float32(lambda b, s: detops_nms.nms(b, s, 0.5, max_output=7), (boxes, scores), device, dtype)
    assert_autocast_float32(lambda b, s: detops_nms.soft_nms(b, s), (boxes, scores), device, dtype)
    assert_autocast_float32(
        lambda b, s, i: detops_nms.batched_soft_nms(b, s, i, method="linear"), (boxes, scores, idxs), device, dtype
    )
    assert_autocast_float32(
        lambda b, s, i: detops_nms.nms_per_image(b, s, 0.5, i), _batch(device=device), device, dtype
    )
    with torch.autocast(device, dtype=dtype):
        keep, kept = detops_nms.soft_nms(boxes.to(dtype), scores.to(dtype))
    assert kept.dtype == dtype
    assert_same((keep, kept), detops_nms.soft_nms(boxes.to(dtype), scores.to(dtype)))
