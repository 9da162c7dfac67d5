"""Bad input raises a RuntimeError naming the argument, never crashes."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import detops_roi
from detops_core.testing import devices, requires_cuda

OPS = ["roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool"]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(op, x, boxes, size=2, scale=1.0, sr=-1):
    fn = getattr(detops_roi, op)
    if op == "roi_align":
        return fn(x, boxes, size, scale, sr, True)
    if op == "ps_roi_align":
        return fn(x, boxes, size, scale, sr)
    return fn(x, boxes, size, scale)


def good(op, device="cpu"):
    x = torch.randn(2, 8, 6, 6, device=device)
    return x, torch.tensor([[0, 1.0, 1.0, 4.0, 4.0], [1, 0.0, 0.0, 5.0, 3.0]], device=device)


@pytest.mark.parametrize("device", devices())
@SETTINGS
@given(op=st.sampled_from(OPS), cols=st.integers(0, 8).filter(lambda c: c != 5), rows=st.integers(0, 4))
def test_rois_shape(device, op, cols, rows):
    x, _ = good(op, device)
    with pytest.raises(RuntimeError, match="boxes|rois"):
        run(op, x, torch.zeros(rows, cols, device=device))


@pytest.mark.parametrize("device", devices())
@SETTINGS
@given(op=st.sampled_from(OPS), cols=st.integers(0, 7).filter(lambda c: c != 4))
def test_box_list_shape(device, op, cols):
    x, _ = good(op, device)
    with pytest.raises(RuntimeError, match=r"boxes\[1\]"):
        run(op, x, [torch.zeros(2, 4, device=device), torch.zeros(3, cols, device=device)])


def _invalid_row_is_zero(op, x, rois, row):
    """The CUDA kernels' defined result for an invalid batch index: that RoI's row is zero
    and sends no gradient; the other rows are those of the same call without it."""
    xg = x.clone().requires_grad_()
    out = run(op, xg, rois)
    assert torch.count_nonzero(out[row]) == 0
    rest = [k for k in range(rois.shape[0]) if k != row]
    xv = x.clone().requires_grad_()
    expected = run(op, xv, rois[rest])
    torch.testing.assert_close(out[rest], expected)
    out.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(xg.grad, xv.grad)


# Batch indices are data: the CPU checks them and raises, but the CUDA kernels must not copy
# rois to the host to do so, and give an invalid RoI a zero row and no gradient instead.
@pytest.mark.parametrize("device", devices())
@SETTINGS
@given(op=st.sampled_from(OPS), batch=st.one_of(st.integers(-5, -1), st.integers(2, 9)))
def test_batch_index_out_of_range(device, op, batch):
    x, rois = good(op, device)
    rois[1, 0] = batch
    if device == "cpu":
        with pytest.raises(RuntimeError, match=r"rois\[1, 0\].*batch index"):
            run(op, x, rois)
    else:
        _invalid_row_is_zero(op, x, rois, 1)


@pytest.mark.parametrize("device", devices())
@SETTINGS
@given(op=st.sampled_from(OPS), value=st.sampled_from([0.5, 1.25, float("nan"), float("inf"), -0.1]))
def test_batch_index_not_integral(device, op, value):
    x, rois = good(op, device)
    rois[0, 0] = value
    if device == "cpu":  # raises on the CPU only, as test_batch_index_out_of_range says why
        with pytest.raises(RuntimeError, match="batch index"):
            run(op, x, rois)
    else:
        _invalid_row_is_zero(op, x, rois, 0)


@pytest.mark.parametrize("device", devices())
@SETTINGS
@given(op=st.sampled_from(OPS), h=st.integers(-3, 2), w=st.integers(-3, 2))
def test_output_size(device, op, h, w):
    x, rois = good(op, device)
    x = torch.randn(2, 36, 6, 6, device=device)
    if h >= 1 and w >= 1:
        run(op, x, rois, (h, w))
        return
    with pytest.raises(RuntimeError, match="output_size"):
        run(op, x, rois, (h, w))


@pytest.mark.parametrize("device", devices())
@SETTINGS
@given(op=st.sampled_from(["ps_roi_align", "ps_roi_pool"]), c=st.integers(1, 30), size=st.integers(1, 3))
def test_ps_channels(device, op, c, size):
    x = torch.randn(1, c, 5, 5, device=device)
    rois = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]], device=device)
    if c % (size * size) == 0:
        assert run(op, x, rois, size).shape == (1, c // (size * size), size, size)
        return
    with pytest.raises(RuntimeError, match="channels"):
        run(op, x, rois, size)


@pytest.mark.parametrize("device", devices())
@SETTINGS
@given(op=st.sampled_from(["roi_align", "ps_roi_align"]), sr=st.integers(1025, 2**40))
def test_sampling_ratio_too_large(device, op, sr):
    x, rois = good(op, device)
    with pytest.raises(RuntimeError, match="sampling_ratio"):
        run(op, x, rois, 2, 1.0, sr)


@pytest.mark.parametrize("op", ["roi_align", "ps_roi_align"])
@pytest.mark.parametrize("sr", [1.5, "2", True, None])
@pytest.mark.parametrize("device", devices())
def test_sampling_ratio_type(op, sr, device):
    x, rois = good(op, device)
    with pytest.raises(RuntimeError, match="sampling_ratio"):
        run(op, x, rois, 2, 1.0, sr)


@pytest.mark.parametrize("device", devices())
@SETTINGS
@given(
    op=st.sampled_from(OPS),
    dtypes=st.tuples(
        st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64]),
        st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.int32]),
    ),
)
def test_dtype_mismatch(device, op, dtypes):
    x, rois = good(op, device)
    x, rois = x.to(dtypes[0]), rois.to(dtypes[1])
    if dtypes[0] == dtypes[1]:
        return
    with pytest.raises(RuntimeError, match="input|rois"):
        run(op, x, rois)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device", devices())
def test_input_rank_and_dtype(op, device):
    x, rois = good(op, device)
    with pytest.raises(RuntimeError, match="input must be a 4-D"):
        run(op, x[0], rois)
    with pytest.raises(RuntimeError, match="input"):
        run(op, x.to(torch.int64), rois.to(torch.int64))


def _multi_level_case(device):
    feats = [torch.randn(2, 3, 8, 8, device=device), torch.randn(2, 3, 4, 4, device=device)]
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0], [1, 0.0, 0.0, 5.0, 3.0]], device=device)
    return feats, rois, torch.tensor([0, 1], device=device)


@pytest.mark.parametrize("device", devices())
def test_multi_level_errors(device):
    feats, rois, ok = _multi_level_case(device)
    with pytest.raises(RuntimeError, match="spatial_scales"):
        detops_roi.multi_level_roi_align(feats, rois, ok, 2, [1.0])
    other_channels = torch.randn(2, 4, 4, 4, device=device)
    with pytest.raises(RuntimeError, match=r"features\[1\]"):
        detops_roi.multi_level_roi_align([feats[0], other_channels], rois, ok, 2, [1.0, 0.5])
    with pytest.raises(RuntimeError, match="levels"):
        detops_roi.multi_level_roi_align(feats, rois, ok[:1], 2, [1.0, 0.5])


# Levels and batch indices are data: raised on the CPU only, as for the other RoI ops
# (test_batch_index_out_of_range); the CUDA kernels give such a RoI a zero row and no
# gradient.
@pytest.mark.parametrize("device", devices())
def test_multi_level_bad_level_or_batch_index(device):
    feats, rois, ok = _multi_level_case(device)
    bad_level = torch.tensor([0, 2], device=device)
    bad_batch = rois * torch.tensor([5.0, 1, 1, 1, 1], device=device)  # rois[1, 0] = 5
    if device == "cpu":
        with pytest.raises(RuntimeError, match=r"levels\[1\]"):
            detops_roi.multi_level_roi_align(feats, rois, bad_level, 2, [1.0, 0.5])
        with pytest.raises(RuntimeError, match="batch index"):
            detops_roi.multi_level_roi_align(feats, bad_batch, ok, 2, [1.0, 0.5])
        return
    for r, levels in ((rois, bad_level), (bad_batch, ok)):
        fs = [f.clone().requires_grad_() for f in feats]
        out = detops_roi.multi_level_roi_align(fs, r, levels, 2, [1.0, 0.5])
        assert torch.count_nonzero(out[1]) == 0
        valid = [f.clone().requires_grad_() for f in feats]
        expected = detops_roi.multi_level_roi_align(valid, r[:1], levels[:1], 2, [1.0, 0.5])
        torch.testing.assert_close(out[:1], expected)
        out.sum().backward()
        expected.sum().backward()
        torch.testing.assert_close(fs[0].grad, valid[0].grad)
        # Only the invalid row 1 could have reached level 1: it gets no gradient at all.
        assert fs[1].grad is None or torch.count_nonzero(fs[1].grad) == 0


# A CUDA kernel handed a CPU tensor would read host memory as device memory: every tensor
# argument's device is checked, and the message names both devices.
MIXED = r"must be on the same device, got (cuda:\d+ and cpu|cpu and cuda:\d+)"


@requires_cuda()
@pytest.mark.parametrize("on_cpu", ["input", "rois", "boxes list"])
@pytest.mark.parametrize("op", OPS)
def test_mixed_devices_name_both(op, on_cpu):
    x, rois = good(op, "cuda")
    if on_cpu == "input":
        x = x.cpu()
    elif on_cpu == "rois":
        rois = rois.cpu()
    else:
        rois = [rois[:1, 1:].cpu(), rois[1:, 1:].cpu()]
    with pytest.raises(RuntimeError, match=r"input and rois " + MIXED):
        run(op, x, rois)


@requires_cuda()
@pytest.mark.parametrize("op", OPS)
def test_backward_ops_mixed_devices_name_both(op):
    x, rois = good(op, "cuda")
    grad = torch.ones_like(run(op, x, rois))
    n, c, h, w = x.shape
    backward = {
        "roi_align": lambda g, r: torch.ops.detops._roi_align_backward(g, r, 1.0, 2, 2, n, c, h, w, -1, True),
        "ps_roi_align": lambda g, r: torch.ops.detops._ps_roi_align_backward(g, r, 1.0, 2, 2, -1, n, c, h, w),
        "ps_roi_pool": lambda g, r: torch.ops.detops._ps_roi_pool_backward(g, r, 1.0, 2, 2, n, c, h, w),
        "roi_pool": lambda g, r: torch.ops.detops._roi_pool_backward(
            g, r, torch.zeros(g.shape, dtype=torch.int32, device=g.device), 1.0, 2, 2, n, c, h, w
        ),
    }[op]
    for g, r in ((grad, rois.cpu()), (grad.cpu(), rois)):
        with pytest.raises(RuntimeError, match=MIXED):
            backward(g, r)
    if op == "roi_pool":
        argmax = torch.zeros(grad.shape, dtype=torch.int32)  # on the CPU, grad on CUDA
        with pytest.raises(RuntimeError, match=r"grad and argmax " + MIXED):
            torch.ops.detops._roi_pool_backward(grad, rois, argmax, 1.0, 2, 2, n, c, h, w)


@requires_cuda()
def test_multi_level_mixed_devices_name_both():
    feats, rois, ok = _multi_level_case("cuda")
    with pytest.raises(RuntimeError, match=MIXED):
        detops_roi.multi_level_roi_align([feats[0], feats[1].cpu()], rois, ok, 2, [1.0, 0.5])
    with pytest.raises(RuntimeError, match=MIXED):
        detops_roi.multi_level_roi_align(feats, rois.cpu(), ok, 2, [1.0, 0.5])
    with pytest.raises(RuntimeError, match=r"rois and levels " + MIXED):
        detops_roi.multi_level_roi_align(feats, rois, ok.cpu(), 2, [1.0, 0.5])


def test_messages_name_the_right_argument():
    rois = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    with pytest.raises(RuntimeError, match=r"grad and rois must have the same dtype"):
        torch.ops.detops._roi_align_backward(torch.zeros(1, 4, 2, 2), rois.double(), 1.0, 2, 2, 1, 4, 5, 5, -1, True)
    maps = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4, dtype=torch.float64)]
    with pytest.raises(RuntimeError, match=r"features\[0\] and features\[1\] must have the same dtype"):
        detops_roi.multi_level_roi_align(maps, rois, torch.tensor([0]), 2, [1.0, 0.5])
