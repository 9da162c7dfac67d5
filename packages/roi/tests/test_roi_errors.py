"""Bad input raises a RuntimeError naming the argument, never crashes."""

import pytest
import roi_reference  # noqa: F401  (registers the ops for call())
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from roi_cases import OPS, backward_args, op_args, options

import detops_roi
from detops_core.testing import assert_traced_raises_like_native, call, devices, requires_cuda

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(op, x, boxes, size=2, sr=-1):
    """detops_roi.<op> with the options every case here shares."""
    return call(op, "detops", x, boxes, **options(op, size, 1.0, sr, True))


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
        run(op, x, rois, 2, sr)


@pytest.mark.parametrize("op", ["roi_align", "ps_roi_align"])
@pytest.mark.parametrize("sr", [1.5, "2", True, None])
@pytest.mark.parametrize("device", devices())
def test_sampling_ratio_type(op, sr, device):
    x, rois = good(op, device)
    with pytest.raises(RuntimeError, match="sampling_ratio"):
        run(op, x, rois, 2, sr)


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
    argmax = torch.zeros(grad.shape, dtype=torch.int32, device="cuda")
    backward = getattr(torch.ops.detops, f"_{op}_backward")
    for g, r in ((grad, rois.cpu()), (grad.cpu(), rois)):
        with pytest.raises(RuntimeError, match=MIXED):
            backward(*backward_args(op, g, r, x.shape, argmax=argmax))
    if op == "roi_pool":
        with pytest.raises(RuntimeError, match=r"grad and argmax " + MIXED):
            backward(*backward_args(op, grad, rois, x.shape, argmax=argmax.cpu()))


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


def _bad_calls():
    """(op, args) the native checks reject before reading any data: shapes, dtypes, sizes."""
    x = torch.randn(2, 8, 6, 6)
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0], [1, 0.0, 0.0, 5.0, 3.0]])
    # A plane of 2^31 elements that takes no memory (roi_pool's argmax is an int32 offset).
    huge_plane = torch.zeros(1, 1, 1, 1).expand(2, 1, 2**16, 2**15)
    calls = []
    for op in OPS:
        forward = getattr(torch.ops.detops, op).default
        bad = {
            "input 3-D": op_args(op, x[0], rois),
            "input int64": op_args(op, x.long(), rois.long()),
            "rois [K, 4]": op_args(op, x, rois[:, :4]),
            "rois 1-D": op_args(op, x, rois[0]),
            "rois float64": op_args(op, x, rois.double()),
            "output_size 0": op_args(op, x, rois, (0, 2)),
            "output_size negative": op_args(op, x, rois, (2, -3)),
            "output_size overflows": op_args(op, x, rois, (2**62, 4)),
        }
        if "align" in op:
            bad["sampling_ratio too large"] = op_args(op, x, rois, sampling_ratio=1025)
        if op.startswith("ps_"):
            bad["channels not divisible"] = op_args(op, x, rois, (3, 3))
        if op == "roi_pool":
            bad["plane of 2^31"] = op_args(op, huge_plane, rois)
        calls += [pytest.param(forward, args, id=f"{op}-{what}") for what, args in bad.items()]

        backward = getattr(torch.ops.detops, f"_{op}_backward").default
        c_out = 2 if op.startswith("ps_") else 8
        grad = torch.randn(2, c_out, 2, 2)
        argmax = torch.zeros(grad.shape, dtype=torch.int32)
        bad = {
            "grad shape": backward_args(op, grad[:1], rois, x.shape, argmax=argmax[:1]),
            "grad int64": backward_args(op, grad.long(), rois.long(), x.shape, argmax=argmax),
            "grad and rois dtypes": backward_args(op, grad, rois.double(), x.shape, argmax=argmax),
            "rois [K, 4]": backward_args(op, grad, rois[:, :4], x.shape, argmax=argmax),
            "negative batch size": backward_args(op, grad, rois, (-1, 8, 6, 6), argmax=argmax),
            "output_size 0": backward_args(op, grad, rois, x.shape, (2, 0), argmax=argmax),
        }
        if "align" in op:
            bad["sampling_ratio too large"] = backward_args(op, grad, rois, x.shape, sampling_ratio=1025)
        if op.startswith("ps_"):
            bad["channels not divisible"] = backward_args(op, grad, rois, (2, 7, 6, 6))
        if op == "roi_pool":
            bad["argmax int64"] = backward_args(op, grad, rois, x.shape, argmax=argmax.long())
            bad["argmax shape"] = backward_args(op, grad, rois, x.shape, argmax=argmax[:, :1])
        calls += [pytest.param(backward, args, id=f"_{op}_backward-{what}") for what, args in bad.items()]

    feats, rois, levels = _multi_level_case("cpu")
    forward = torch.ops.detops.multi_level_roi_align.default
    bad = {
        "no features": ([], [], rois, levels, 2, 2, -1, True),
        "output_size 0": (feats, [1.0, 0.5], rois, levels, 0, 2, -1, True),
        "sampling_ratio too large": (feats, [1.0, 0.5], rois, levels, 2, 2, 1025, True),
        "one scale for two maps": (feats, [1.0], rois, levels, 2, 2, -1, True),
        "features[1] 3-D": ([feats[0], feats[1][0]], [1.0, 0.5], rois, levels, 2, 2, -1, True),
        "features[1] int64": ([feats[0], feats[1].long()], [1.0, 0.5], rois, levels, 2, 2, -1, True),
        "features[1] channels": ([feats[0], feats[1][:, :2]], [1.0, 0.5], rois, levels, 2, 2, -1, True),
        "features[1] float64": ([feats[0], feats[1].double()], [1.0, 0.5], rois, levels, 2, 2, -1, True),
        "rois float64": (feats, [1.0, 0.5], rois.double(), levels, 2, 2, -1, True),
        "levels shape": (feats, [1.0, 0.5], rois, levels[:1], 2, 2, -1, True),
        "levels int32": (feats, [1.0, 0.5], rois, levels.int(), 2, 2, -1, True),
    }
    calls += [pytest.param(forward, args, id=f"multi_level_roi_align-{what}") for what, args in bad.items()]
    backward = torch.ops.detops._multi_level_roi_align_backward.default
    grad = torch.randn(2, 3, 2, 2)
    bad = {
        "two heights for one scale": (grad, rois, levels, [1.0], [8, 4], [8], 2, 3, 2, 2, -1, True),
        "grad shape": (grad[:, :1], rois, levels, [1.0, 0.5], [8, 4], [8, 4], 2, 3, 2, 2, -1, True),
        "negative height": (grad, rois, levels, [1.0, 0.5], [8, -4], [8, 4], 2, 3, 2, 2, -1, True),
        "levels int32": (grad, rois, levels.int(), [1.0, 0.5], [8, 4], [8, 4], 2, 3, 2, 2, -1, True),
    }
    calls += [pytest.param(backward, args, id=f"_multi_level_roi_align_backward-{what}") for what, args in bad.items()]
    return calls


@pytest.mark.parametrize("op,args", _bad_calls())
def test_bad_calls_raise_an_error_naming_the_op(op, args):
    with pytest.raises(RuntimeError, match=r"^detops\.\w+: "):
        op(*args)


# torch.compile and torch.export trace with the fake kernels, which only infer shapes: the
# native op reports the bad call when the traced code runs.
_TRACED = {
    "roi_align-rois [K, 4]",
    "roi_pool-input int64",
    "ps_roi_align-channels not divisible",
    "ps_roi_pool-output_size negative",
    "_roi_align_backward-grad shape",
    "multi_level_roi_align-levels int32",
    "multi_level_roi_align-one scale for two maps",
}


@pytest.mark.parametrize("op,args", [c for c in _bad_calls() if c.id in _TRACED])
def test_bad_calls_once_traced_raise_like_native(op, args):
    assert_traced_raises_like_native(op, args)
