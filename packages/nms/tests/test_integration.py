"""The ops inside PyTorch's machinery: opcheck, TorchScript, torch.compile, torch.export,
autocast."""

import pytest
import torch
from nms_reference import clustered_boxes, reference_batched_nms, reference_nms

import detops_nms
from detops_core.testing import devices


def _problem(n=200, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    problem = clustered_boxes(n, g), torch.rand(n, generator=g), torch.randint(0, 5, (n,), generator=g)
    return tuple(t.to(device) for t in problem)


@pytest.mark.parametrize("n", [0, 1, 200])
@pytest.mark.parametrize("device", devices())
def test_opcheck(n, device):
    boxes, scores, idxs = _problem(n, device=device)
    torch.library.opcheck(torch.ops.detops.nms.default, (boxes, scores, 0.5))
    torch.library.opcheck(torch.ops.detops.batched_nms.default, (boxes, scores, idxs, 0.5))


@pytest.mark.parametrize("device", devices())
def test_torchscript_wrappers(device):
    boxes, scores, idxs = _problem(device=device)
    nms = torch.jit.script(detops_nms.nms)
    batched = torch.jit.script(detops_nms.batched_nms)
    # The reference runs on CPU copies (it loops in Python over CPU tensors).
    cpu = [t.cpu() for t in (boxes, scores, idxs)]
    expected, expected_batched = reference_nms(*cpu[:2], 0.5), reference_batched_nms(*cpu, 0.5)
    assert torch.equal(nms(boxes, scores, 0.5).cpu(), expected)
    assert torch.equal(batched(boxes, scores, idxs, 0.5).cpu(), expected_batched)
    assert torch.equal(batched(boxes, scores, idxs.int(), 0.5).cpu(), expected_batched)


@pytest.mark.parametrize("fn_name", ["box_area", "box_iou", "box_convert", "clip_boxes_to_image", "remove_small_boxes"])
def test_box_utilities_script(fn_name):
    torch.jit.script(getattr(detops_nms, fn_name))


def _postprocess(boxes, scores, idxs):
    keep = detops_nms.nms(boxes, scores, 0.5)
    per_class = detops_nms.batched_nms(boxes, scores, idxs, 0.5)
    return boxes[keep] * 2, scores[per_class].sum()


@pytest.mark.parametrize("device", devices())
def test_compile_fullgraph(device):
    boxes, scores, idxs = _problem(device=device)
    compiled = torch.compile(_postprocess, fullgraph=True, dynamic=False)
    got = compiled(boxes, scores, idxs)
    expected = _postprocess(boxes, scores, idxs)
    assert torch.equal(got[0], expected[0]) and torch.allclose(got[1], expected[1])
    other = _problem(150, seed=1, device=device)  # new sizes: recompiles or reuses, results stay right
    got = compiled(*other)
    assert torch.equal(got[0], _postprocess(*other)[0])


@pytest.mark.parametrize("device", devices())
def test_export(device):
    class PostProcess(torch.nn.Module):
        def forward(self, boxes, scores, idxs):
            return _postprocess(boxes, scores, idxs)

    boxes, scores, idxs = _problem(device=device)
    exported = torch.export.export(PostProcess(), (boxes, scores, idxs))
    got = exported.module()(boxes, scores, idxs)
    assert torch.equal(got[0], _postprocess(boxes, scores, idxs)[0])
    assert any("detops.nms" in str(node.target) for node in exported.graph.nodes)


@pytest.mark.parametrize("device", devices())
def test_autocast_computes_in_float32(device):
    boxes, scores, idxs = _problem(device=device)
    expected = detops_nms.nms(boxes.bfloat16().float(), scores.bfloat16().float(), 0.5)
    with torch.autocast(device, dtype=torch.bfloat16):
        got = detops_nms.nms(boxes.bfloat16(), scores.bfloat16(), 0.5)
        got_batched = detops_nms.batched_nms(boxes.bfloat16(), scores.bfloat16(), idxs, 0.5)
    assert torch.equal(got, expected)
    assert torch.equal(
        got_batched, detops_nms.batched_nms(boxes.bfloat16().float(), scores.bfloat16().float(), idxs, 0.5)
    )


@pytest.mark.parametrize("device", devices())
def test_inputs_requiring_grad_are_fine(device):
    boxes, scores, _ = _problem(device=device)
    boxes.requires_grad_(True)
    scores.requires_grad_(True)
    keep = detops_nms.nms(boxes, scores, 0.5)
    (boxes[keep].sum() + scores[keep].sum()).backward()  # gradient flows through indexing
    assert boxes.grad is not None and boxes.grad.abs().sum() == 4 * len(keep)
