"""Bad input raises a RuntimeError naming the argument, never crashes."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import detops_roi

OPS = ["roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool"]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(op, x, boxes, size=2, scale=1.0, sr=-1):
    fn = getattr(detops_roi, op)
    if op == "roi_align":
        return fn(x, boxes, size, scale, sr, True)
    if op == "ps_roi_align":
        return fn(x, boxes, size, scale, sr)
    return fn(x, boxes, size, scale)


def good(op):
    return torch.randn(2, 8, 6, 6), torch.tensor([[0, 1.0, 1.0, 4.0, 4.0], [1, 0.0, 0.0, 5.0, 3.0]])


@SETTINGS
@given(op=st.sampled_from(OPS), cols=st.integers(0, 8).filter(lambda c: c != 5), rows=st.integers(0, 4))
def test_rois_shape(op, cols, rows):
    x, _ = good(op)
    with pytest.raises(RuntimeError, match="boxes|rois"):
        run(op, x, torch.zeros(rows, cols))


@SETTINGS
@given(op=st.sampled_from(OPS), cols=st.integers(0, 7).filter(lambda c: c != 4))
def test_box_list_shape(op, cols):
    x, _ = good(op)
    with pytest.raises(RuntimeError, match=r"boxes\[1\]"):
        run(op, x, [torch.zeros(2, 4), torch.zeros(3, cols)])


@SETTINGS
@given(op=st.sampled_from(OPS), batch=st.one_of(st.integers(-5, -1), st.integers(2, 9)))
def test_batch_index_out_of_range(op, batch):
    x, rois = good(op)
    rois[1, 0] = batch
    with pytest.raises(RuntimeError, match=r"rois\[1, 0\].*batch index"):
        run(op, x, rois)


@SETTINGS
@given(op=st.sampled_from(OPS), value=st.sampled_from([0.5, 1.25, float("nan"), float("inf"), -0.1]))
def test_batch_index_not_integral(op, value):
    x, rois = good(op)
    rois[0, 0] = value
    with pytest.raises(RuntimeError, match="batch index"):
        run(op, x, rois)


@SETTINGS
@given(op=st.sampled_from(OPS), h=st.integers(-3, 2), w=st.integers(-3, 2))
def test_output_size(op, h, w):
    x, rois = good(op)
    x = torch.randn(2, 36, 6, 6)
    if h >= 1 and w >= 1:
        run(op, x, rois, (h, w))
        return
    with pytest.raises(RuntimeError, match="output_size"):
        run(op, x, rois, (h, w))


@SETTINGS
@given(op=st.sampled_from(["ps_roi_align", "ps_roi_pool"]), c=st.integers(1, 30), size=st.integers(1, 3))
def test_ps_channels(op, c, size):
    x = torch.randn(1, c, 5, 5)
    rois = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    if c % (size * size) == 0:
        assert run(op, x, rois, size).shape == (1, c // (size * size), size, size)
        return
    with pytest.raises(RuntimeError, match="channels"):
        run(op, x, rois, size)


@SETTINGS
@given(op=st.sampled_from(["roi_align", "ps_roi_align"]), sr=st.integers(1025, 2**40))
def test_sampling_ratio_too_large(op, sr):
    x, rois = good(op)
    with pytest.raises(RuntimeError, match="sampling_ratio"):
        run(op, x, rois, 2, 1.0, sr)


@pytest.mark.parametrize("op", ["roi_align", "ps_roi_align"])
@pytest.mark.parametrize("sr", [1.5, "2", True, None])
def test_sampling_ratio_type(op, sr):
    x, rois = good(op)
    with pytest.raises(RuntimeError, match="sampling_ratio"):
        run(op, x, rois, 2, 1.0, sr)


@SETTINGS
@given(
    op=st.sampled_from(OPS),
    dtypes=st.tuples(
        st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64]),
        st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.int32]),
    ),
)
def test_dtype_mismatch(op, dtypes):
    x, rois = good(op)
    x, rois = x.to(dtypes[0]), rois.to(dtypes[1])
    if dtypes[0] == dtypes[1]:
        return
    with pytest.raises(RuntimeError, match="input|rois"):
        run(op, x, rois)


@pytest.mark.parametrize("op", OPS)
def test_input_rank_and_dtype(op):
    x, rois = good(op)
    with pytest.raises(RuntimeError, match="input must be a 4-D"):
        run(op, x[0], rois)
    with pytest.raises(RuntimeError, match="input"):
        run(op, x.to(torch.int64), rois.to(torch.int64))


def test_multi_level_errors():
    feats = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0], [1, 0.0, 0.0, 5.0, 3.0]])
    ok = torch.tensor([0, 1])
    with pytest.raises(RuntimeError, match=r"levels\[1\]"):
        detops_roi.multi_level_roi_align(feats, rois, torch.tensor([0, 2]), 2, [1.0, 0.5])
    with pytest.raises(RuntimeError, match="spatial_scales"):
        detops_roi.multi_level_roi_align(feats, rois, ok, 2, [1.0])
    with pytest.raises(RuntimeError, match=r"features\[1\]"):
        detops_roi.multi_level_roi_align([feats[0], torch.randn(2, 4, 4, 4)], rois, ok, 2, [1.0, 0.5])
    with pytest.raises(RuntimeError, match="levels"):
        detops_roi.multi_level_roi_align(feats, rois, torch.tensor([0]), 2, [1.0, 0.5])
    with pytest.raises(RuntimeError, match="batch index"):
        detops_roi.multi_level_roi_align(feats, rois * torch.tensor([5.0, 1, 1, 1, 1]), ok, 2, [1.0, 0.5])
