"""nms, batched_nms, nms_per_image, soft_nms and batched_soft_nms inside PyTorch's
machinery: opcheck, TorchScript, torch.compile(fullgraph), torch.export and autocast. The
fake kernels' errors are checked with the bad-input cases (test_bad_input.py)."""

import pytest
import torch
from nms_reference import clustered_boxes, reference_batched_nms, reference_nms
from soft_nms_reference import reference_nms_limited, reference_nms_per_image, reference_soft_nms

import detops_nms
from detops_core.testing import (
    assert_autocast_float32,
    assert_compiles,
    assert_exports,
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
    assert_opcheck(ops.nms.default, (boxes, scores, 0.5))
    assert_opcheck(ops.nms.default, (boxes, scores, 0.5, 5))
    assert_opcheck(ops.batched_nms.default, (boxes, scores, idxs, 0.5))
    assert_opcheck(ops.batched_nms.default, (boxes, scores, idxs, 0.5, 0))
    assert_opcheck(ops.soft_nms.default, (boxes, scores, 0.3, 0.5, 0.001, "gaussian"))
    assert_opcheck(ops.batched_soft_nms.default, (boxes, scores, idxs, 0.3, 0.5, 0.01, "linear"))
    b, s, i = _batch(2, n, device=device)
    assert_opcheck(ops.nms_per_image.default, (b, s, i, 0.5, 7))
    assert_opcheck(ops.nms_per_image.default, (b, s, None, 0.5, None))


@pytest.mark.parametrize("device", devices())
def test_torchscript_wrappers(device):
    boxes, scores, idxs = _problem(device=device)
    b, s, i = _batch(device=device)
    # The references loop in Python over CPU tensors.
    cpu = boxes.cpu(), scores.cpu()
    assert_scripts(detops_nms.nms, (boxes, scores, 0.5), reference_nms(*cpu, 0.5).to(device))
    scripted = assert_scripts(detops_nms.nms, (boxes, scores, 0.5, 4), reference_nms_limited(*cpu, 0.5, 4).to(device))
    assert torch.equal(scripted(boxes, scores, 0.5, max_output=4), scripted(boxes, scores, 0.5, 4))
    per_class = reference_batched_nms(*cpu, idxs.cpu(), 0.5).to(device)
    assert_scripts(detops_nms.batched_nms, (boxes, scores, idxs, 0.5), per_class)
    assert_scripts(detops_nms.batched_nms, (boxes, scores, idxs.int(), 0.5), per_class)
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


def _box_utility_args(boxes):
    return {
        "box_area": (boxes,),
        "box_iou": (boxes, boxes[:7]),
        "box_convert": (boxes, "xyxy", "cxcywh"),
        "clip_boxes_to_image": (boxes, (60, 80)),
        "remove_small_boxes": (boxes, 12.5),
    }


@pytest.mark.parametrize("fn_name", ["box_area", "box_iou", "box_convert", "clip_boxes_to_image", "remove_small_boxes"])
def test_box_utilities_script(fn_name):
    assert_scripts(getattr(detops_nms, fn_name), _box_utility_args(_problem()[0])[fn_name])


def _postprocess(boxes, scores, idxs):
    top = detops_nms.nms(boxes, scores, 0.5, max_output=10)
    everything = detops_nms.nms(boxes, scores, 0.5)
    per_class_hard = detops_nms.batched_nms(boxes, scores, idxs, 0.5)
    keep, decayed = detops_nms.soft_nms(boxes, scores, method="linear")
    per_class, per_class_scores = detops_nms.batched_soft_nms(boxes, scores, idxs)
    return (
        boxes[top] * 2,
        boxes[everything] * 2,
        scores[per_class_hard].sum(),
        boxes[keep] * decayed[:, None],
        per_class_scores.sum() + per_class.sum(),
    )


def _per_image(boxes, scores, idxs):
    rows = detops_nms.nms_per_image(boxes, scores, 0.5, idxs, max_output=6)
    return boxes[rows[:, 0], rows[:, 1]] + 1


@pytest.mark.parametrize("device", devices())
def test_compile_fullgraph(device):
    compiled = assert_compiles(_postprocess, _problem(device=device), dynamic=False, rtol=1e-6, atol=1e-6)
    other = _problem(90, seed=1, device=device)  # new sizes: recompiles or reuses, results stay right
    assert_same(compiled(*other), _postprocess(*other), rtol=1e-6, atol=1e-6, what="compiled, new sizes")
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
    expected = {"nms", "batched_nms", "soft_nms", "batched_soft_nms"}
    assert {f"detops.{op}.default" for op in expected} <= targets
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
    assert_autocast_float32(lambda b, s: detops_nms.nms(b, s, 0.5), (boxes, scores), device, dtype)
    assert_autocast_float32(lambda b, s: detops_nms.nms(b, s, 0.5, max_output=7), (boxes, scores), device, dtype)
    assert_autocast_float32(lambda b, s, i: detops_nms.batched_nms(b, s, i, 0.5), (boxes, scores, idxs), device, dtype)
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


@pytest.mark.parametrize("device", devices())
def test_inputs_requiring_grad_are_fine(device):
    boxes, scores, _ = _problem(device=device)
    boxes.requires_grad_(True)
    scores.requires_grad_(True)
    keep = detops_nms.nms(boxes, scores, 0.5)
    (boxes[keep].sum() + scores[keep].sum()).backward()  # gradient flows through indexing
    assert boxes.grad is not None and boxes.grad.abs().sum() == 4 * len(keep)
