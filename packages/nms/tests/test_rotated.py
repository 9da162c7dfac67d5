"""box_iou_rotated against exact rational clipping (rotated_reference.py), nms_rotated and
batched_nms_rotated against a greedy reference on that IoU, and the machinery (fake
kernels, opcheck, TorchScript, torch.compile, torch.export, autocast, ONNX refusal).
Conversions and areas in the rotated formats: test_rotated_formats.py."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rotated_reference import corners, exact_iou, greedy_nms, iou_matrix, margin_to, random_rotated

import detops_nms
from detops_core.testing import (
    assert_autocast_float32,
    assert_compiles,
    assert_exports,
    assert_opcheck,
    assert_scripts,
    assert_traced_raises_like_native,
    devices,
    float_dtypes,
)

# Bound on |IoU - exact| per dtype: the IoU itself is float64 from the boxes' values, so
# only the output rounding (and, for float64, float64's clipping) is left.
IOU_ATOL = {torch.float64: 1e-12, torch.float32: 2e-7, torch.float16: 1e-3, torch.bfloat16: 4e-3}


def _rotated_case(n=30, seed=0):
    return random_rotated(n, torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------ box_iou_rotated


@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("device", devices())
def test_box_iou_rotated_matches_exact_clipping(dtype, device):
    a = _rotated_case(25, 5).to(dtype)
    b = _rotated_case(20, 6).to(dtype)
    got = detops_nms.box_iou_rotated(a.to(device), b.to(device))
    assert got.dtype == dtype and got.shape == (25, 20) and got.device.type == device
    expected = iou_matrix(a, b)  # from the same (narrow) values, in float64
    assert (expected > 0).float().mean() > 0.15 and (expected == 0).any()  # the case has both
    torch.testing.assert_close(got.cpu().double(), expected, rtol=0, atol=IOU_ATOL[dtype])


def _special_pairs():
    near = 1e-7  # degrees
    return {
        "identical": ([5, 5, 4, 2, 30], [5, 5, 4, 2, 30]),
        "identical_axis_aligned": ([0, 0, 2, 2, 0], [0, 0, 2, 2, 0]),
        "nested": ([0, 0, 10, 10, 0], [1, 1, 2, 3, 37]),
        "touching_edge": ([0, 0, 2, 2, 0], [2, 0, 2, 2, 0]),
        "touching_corner": ([0, 0, 2, 2, 0], [2, 2, 2, 2, 0]),
        "touching_rotated_corner": ([0, 0, 2, 2, 0], [1 + math.sqrt(2), 0, 2, 2, 45]),
        "collinear_edge_half": ([0, 0, 2, 2, 0], [1, 0, 2, 2, 0]),
        "collinear_edge_rotated": ([0, 0, 4, 2, 30], [1, 0, 4, 2, 30]),
        "same_rectangle_turned_180": ([3, 4, 5, 2, 10], [3, 4, 5, 2, 190]),
        "same_rectangle_turned_90_swapped": ([3, 4, 5, 2, 10], [3, 4, 2, 5, 100]),
        "negative_size_same_rectangle": ([3, 4, 5, 2, 10], [3, 4, -5, -2, 10]),
        "zero_width": ([0, 0, 0, 2, 0], [0, 0, 2, 2, 0]),
        "both_zero_area": ([0, 0, 0, 2, 0], [0, 0, 0, 2, 0]),
        "near_parallel": ([0, 0, 100, 1, 0], [0, 0.3, 100, 1, near]),
        "near_parallel_thin": ([0, 0, 1000, 0.01, 20], [0, 0.001, 1000, 0.01, 20 + near]),
        "cross": ([0, 0, 10, 1, 0], [0, 0, 10, 1, 90]),
        "far_apart": ([0, 0, 1, 1, 0], [1e6, 1e6, 1, 1, 0]),
        "large_coordinates": ([1e6 + 0.5, 1e6, 3, 2, 15], [1e6 + 1.5, 1e6, 3, 2, 15]),
    }


@pytest.mark.parametrize("name", sorted(_special_pairs()))
@pytest.mark.parametrize("device", devices())
def test_box_iou_rotated_special_pairs(name, device):
    first, second = _special_pairs()[name]
    a = torch.tensor([first], dtype=torch.float64, device=device)
    b = torch.tensor([second], dtype=torch.float64, device=device)
    got = detops_nms.box_iou_rotated(a, b).item()
    expected = float(exact_iou(first, second))
    assert math.isfinite(got) and 0 <= got <= 1
    assert abs(got - expected) <= 1e-9, (got, expected)
    assert detops_nms.box_iou_rotated(b, a).item() == got  # symmetric, bit for bit
    if name.startswith("identical") or name.startswith("same_rectangle") or name.startswith("negative_size"):
        assert abs(got - 1) <= 1e-12
    if name == "identical":
        assert got == 1.0  # exactly: a box clipped by itself stays itself


def test_box_iou_rotated_known_values():
    # Values derived by hand, independent of both implementations: two unit-offset 2x2
    # squares overlap in a 1x2 strip (1/3); a 2x2 square and itself turned 45 degrees share
    # a regular octagon of area 8 (sqrt 2 - 1), so IoU = 1 / sqrt 2.
    a = torch.tensor([[0.0, 0, 2, 2, 0]], dtype=torch.float64)
    assert detops_nms.box_iou_rotated(
        a, torch.tensor([[1.0, 0, 2, 2, 0]], dtype=torch.float64)
    ).item() == pytest.approx(1 / 3, abs=1e-15)
    turned = torch.tensor([[0.0, 0, 2, 2, 45]], dtype=torch.float64)
    assert detops_nms.box_iou_rotated(a, turned).item() == pytest.approx(1 / math.sqrt(2), abs=1e-14)


@pytest.mark.parametrize("device", devices())
def test_box_iou_rotated_non_finite_boxes_give_nan_rows(device):
    boxes = torch.tensor(
        [[0, 0, 2, 2, 0], [math.nan, 0, 2, 2, 0], [0, 0, math.inf, 2, 0], [0, 0, 2, 2, -math.inf], [1, 0, 2, 2, 0]],
        dtype=torch.float32,
        device=device,
    )
    m = detops_nms.box_iou_rotated(boxes, boxes).cpu()
    bad = torch.tensor([False, True, True, True, False])
    assert m[bad].isnan().all() and m[:, bad].isnan().all()
    assert not m[~bad][:, ~bad].isnan().any()


@pytest.mark.parametrize("device", devices())
def test_box_iou_rotated_empty(device):
    for n, m in [(0, 3), (3, 0), (0, 0)]:
        out = detops_nms.box_iou_rotated(torch.rand(n, 5, device=device), torch.rand(m, 5, device=device))
        assert out.shape == (n, m) and out.dtype == torch.float32


def test_box_iou_rotated_is_parallel_and_repeatable():
    a, b = _rotated_case(300, 7), _rotated_case(200, 8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = detops_nms.box_iou_rotated(a, b)
        torch.set_num_threads(max(2, threads))
        many = detops_nms.box_iou_rotated(a, b)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


# Hypothesis: boxes of sizes 0.5..50 around the origin; the properties hold up to float64
# rounding of the clipping (and, for the two invariances, of the moved corners).
_coord = st.floats(-30, 30, allow_nan=False)
_side = st.floats(0.5, 50, allow_nan=False)
_angle = st.floats(-360, 360, allow_nan=False)
_box = st.tuples(_coord, _coord, _side, _side, _angle)


def _iou(a, b):
    return detops_nms.box_iou_rotated(
        torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)
    ).item()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(a=_box, b=_box)
def test_iou_symmetric_and_bounded(a, b):
    v = _iou(a, b)
    assert 0 <= v <= 1
    assert _iou(b, a) == v
    assert _iou(a, a) == 1.0


@settings(max_examples=200, deadline=None, derandomize=True)
@given(a=_box, b=_box, dx=st.integers(-1000, 1000), dy=st.integers(-1000, 1000))
def test_iou_translation_invariant(a, b, dx, dy):
    moved_a = (a[0] + dx, a[1] + dy, *a[2:])
    moved_b = (b[0] + dx, b[1] + dy, *b[2:])
    assert abs(_iou(moved_a, moved_b) - _iou(a, b)) <= 1e-9


@settings(max_examples=200, deadline=None, derandomize=True)
@given(a=_box, b=_box, px=_coord, py=_coord)
def test_iou_invariant_under_quarter_turn_of_both(a, b, px, py):
    # r + 90 turns a box's axes by a quarter turn: u -> -v, v -> u, the linear map
    # (x, y) -> (y, -x); the centre turns about (px, py) with the same map.
    def turn(box):
        cx, cy, w, h, r = box
        return (px + (cy - py), py - (cx - px), w, h, r + 90)

    assert abs(_iou(turn(a), turn(b)) - _iou(a, b)) <= 1e-9


@settings(max_examples=60, deadline=None, derandomize=True)
@given(a=_box, b=_box)
def test_iou_matches_exact_clipping_fuzzed(a, b):
    assert abs(_iou(a, b) - float(exact_iou(a, b))) <= 1e-9


# ------------------------------------------------------------------------ nms_rotated


def _nms_case(n, seed, ties=False):
    g = torch.Generator().manual_seed(seed)
    boxes = random_rotated(n, g, spread=30.0, size=15.0)
    scores = (
        (torch.randint(0, 4, (n,), generator=g).double() / 4)
        if ties
        else torch.rand(n, generator=g, dtype=torch.float64)
    )
    return boxes, scores


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("device", devices())
def test_nms_rotated_matches_greedy_reference(threshold, ties, dtype, device):
    boxes, scores = _nms_case(40, 11 + int(threshold * 10) + 5 * ties, ties)
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    # The kernel's float64 IoU and the exact one may differ in the last bits: the case must
    # not have an IoU that close to the threshold (else the answer is not a test of NMS).
    assert margin_to(boxes, threshold) > 1e-9 or threshold == 0.0
    expected = greedy_nms(boxes, scores, threshold)
    got = detops_nms.nms_rotated(boxes.to(device), scores.to(device), threshold)
    assert got.dtype == torch.int64 and torch.equal(got.cpu(), expected), (got, expected)
    idxs = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(3))
    expected = greedy_nms(boxes, scores, threshold, idxs)
    for cls in (idxs, idxs.int()):
        got = detops_nms.batched_nms_rotated(boxes.to(device), scores.to(device), cls.to(device), threshold)
        assert torch.equal(got.cpu(), expected), (got, expected)


@pytest.mark.parametrize("device", devices())
def test_nms_rotated_contract_edges(device):
    # Identical boxes: IoU exactly 1 (not > 1), so threshold 1.0 keeps both; equal scores
    # keep input order; a NaN box is never suppressed and suppresses nothing; NaN scores
    # rank first.
    box = [5.0, 5.0, 4.0, 2.0, 30.0]
    boxes = torch.tensor([box, box, [math.nan, 0, 1, 1, 0], [5.0, 5.0, 4.0, 2.0, 30.0]], device=device)
    scores = torch.tensor([0.5, 0.5, 0.9, math.nan], device=device)
    assert detops_nms.nms_rotated(boxes, scores, 1.0).tolist() == [3, 2, 0, 1]
    assert detops_nms.nms_rotated(boxes, scores, 0.99).tolist() == [3, 2]
    # Squares overlapping by half their width: IoU 1/3, just above and just below.
    pair = torch.tensor([[0.0, 0, 2, 2, 0], [1.0, 0, 2, 2, 0]], dtype=torch.float64, device=device)
    s = torch.tensor([0.9, 0.8], dtype=torch.float64, device=device)
    assert detops_nms.nms_rotated(pair, s, 1 / 3 - 1e-12).tolist() == [0]
    assert detops_nms.nms_rotated(pair, s, 1 / 3 + 1e-12).tolist() == [0, 1]
    # A negative threshold suppresses every later box, overlapping or not (IoU 0 > -0.5),
    # as the definition says; far-apart boxes included.
    far = torch.tensor([[0.0, 0, 1, 1, 0], [1e4, 0, 1, 1, 0], [-1e4, 5e3, 2, 1, 30]], device=device)
    assert detops_nms.nms_rotated(far, torch.tensor([0.1, 0.9, 0.5], device=device), -0.5).tolist() == [1]
    assert detops_nms.nms_rotated(far, torch.tensor([0.1, 0.9, 0.5], device=device), 0.0).tolist() == [1, 2, 0]
    empty = detops_nms.nms_rotated(torch.zeros(0, 5, device=device), torch.zeros(0, device=device), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64


def test_batched_nms_rotated_classes_never_interact():
    boxes, scores = _nms_case(60, 21)
    idxs = torch.arange(60) % 4
    got = detops_nms.batched_nms_rotated(boxes, scores, idxs, 0.2)
    parts = []
    for c in range(4):
        sel = torch.nonzero(idxs == c).flatten()
        parts.append(sel[detops_nms.nms_rotated(boxes[sel], scores[sel], 0.2)])
    merged = torch.cat(parts)
    assert torch.equal(got, merged[torch.argsort(scores[merged], descending=True, stable=True)])


# ------------------------------------------------------------------------ bad input + machinery


def _bad_calls():
    b5, s = torch.rand(3, 5), torch.rand(3)
    i = torch.zeros(3, dtype=torch.int64)
    iou, nms, bnms = (
        torch.ops.detops.box_iou_rotated,
        torch.ops.detops.nms_rotated,
        torch.ops.detops.batched_nms_rotated,
    )
    return {
        "iou_boxes1_shape": (iou, (torch.rand(3, 4), b5)),
        "iou_boxes2_shape": (iou, (b5, torch.rand(2, 5, 1))),
        "iou_int_boxes": (iou, (b5.int(), b5.int())),
        "iou_dtype_mismatch": (iou, (b5, b5.double())),
        "nms_boxes_shape": (nms, (torch.rand(3, 4), s, 0.5)),
        "nms_scores_count": (nms, (b5, torch.rand(4), 0.5)),
        "nms_scores_shape": (nms, (b5, torch.rand(3, 1), 0.5)),
        "nms_dtype_mismatch": (nms, (b5, s.double(), 0.5)),
        "batched_idxs_dtype": (bnms, (b5, s, i.int(), 0.5)),
        "batched_idxs_shape": (bnms, (b5, s, i[:2], 0.5)),
    }


@pytest.mark.parametrize("name", sorted(_bad_calls()))
def test_bad_input_raises_a_named_error(name):
    op, args = _bad_calls()[name]
    with pytest.raises(RuntimeError, match=r"^detops\.\w+: .*must"):
        op(*args)


@pytest.mark.parametrize("name", ["iou_boxes2_shape", "nms_dtype_mismatch", "batched_idxs_dtype"])
def test_bad_input_once_traced_raises_like_native(name):
    assert_traced_raises_like_native(*_bad_calls()[name])


def test_opcheck():
    a, b = _rotated_case(6, 30).float(), _rotated_case(4, 31).float()
    s = torch.rand(6)
    assert_opcheck(torch.ops.detops.box_iou_rotated.default, (a, b))
    assert_opcheck(torch.ops.detops.nms_rotated.default, (a, s, 0.5))
    assert_opcheck(torch.ops.detops.batched_nms_rotated.default, (a, s, torch.tensor([0, 1, 0, 1, 0, 1]), 0.5))


def _pipeline(boxes, scores, idxs):
    keep = detops_nms.batched_nms_rotated(boxes, scores, idxs, 0.3)
    return detops_nms.box_iou_rotated(boxes, boxes).sum(1), keep


def _pipeline_nms(boxes, scores):
    return detops_nms.nms_rotated(boxes, scores, 0.3)


def test_script_compile_export():
    boxes, scores = _nms_case(30, 41)
    boxes, scores = boxes.float(), scores.float()
    idxs = torch.arange(30) % 3
    assert_scripts(_pipeline, (boxes, scores, idxs))
    assert_scripts(_pipeline_nms, (boxes, scores))
    assert_compiles(detops_nms.box_iou_rotated, (boxes, boxes[:7]))
    assert_compiles(_pipeline_nms, (boxes, scores))
    assert_exports(detops_nms.box_iou_rotated, (boxes, boxes[:7]))
    assert_exports(_pipeline, (boxes, scores, idxs))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_computes_in_float32(dtype):
    boxes, scores = _nms_case(30, 51)
    assert_autocast_float32(detops_nms.box_iou_rotated, (boxes.float(), boxes[:9].float()), "cpu", dtype)
    assert_autocast_float32(_pipeline_nms, (boxes.float(), scores.float()), "cpu", dtype)


def test_mmcv_conversion_is_the_mirror_image():
    # mmcv (clockwise=True) puts the width axis at (cos a, sin a) on the image: the box
    # detops draws for r = -degrees(a). Check through the corners, written here from
    # mmcv's documented convention.
    g = torch.Generator().manual_seed(9)
    mm = torch.cat(
        (
            torch.rand(10, 4, generator=g, dtype=torch.float64) * 10,
            torch.rand(10, 1, generator=g, dtype=torch.float64) * 6 - 3,
        ),
        1,
    )
    ours = detops_nms.from_mmcv_rotated(mm)
    for m, o in zip(mm.tolist(), ours.tolist()):
        cx, cy, w, h, a = m
        ux, uy, vx, vy = math.cos(a), math.sin(a), -math.sin(a), math.cos(a)
        mm_corners = {
            (round(cx + sx * w / 2 * ux + sy * h / 2 * vx, 9), round(cy + sx * w / 2 * uy + sy * h / 2 * vy, 9))
            for sx in (-1, 1)
            for sy in (-1, 1)
        }
        assert {(round(x, 9), round(y, 9)) for x, y in corners(o)} == mm_corners
    torch.testing.assert_close(detops_nms.to_mmcv_rotated(ours), mm)
    torch.testing.assert_close(detops_nms.to_mmcv_rotated(detops_nms.from_mmcv_rotated(mm, False), False), mm)


class _RotatedNms(torch.nn.Module):
    def forward(self, boxes, scores):
        return detops_nms.nms_rotated(boxes, scores, 0.5)


class _RotatedIou(torch.nn.Module):
    def forward(self, boxes, scores):
        return detops_nms.box_iou_rotated(boxes, boxes)


class _RotatedBatched(torch.nn.Module):
    def forward(self, boxes, scores):
        return detops_nms.batched_nms_rotated(boxes, scores, torch.zeros_like(scores, dtype=torch.int64), 0.5)


@pytest.mark.parametrize(
    "model, name",
    [(_RotatedIou(), "box_iou_rotated"), (_RotatedNms(), "nms_rotated"), (_RotatedBatched(), "batched_nms_rotated")],
)
def test_onnx_export_is_refused_naming_the_op(model, name):
    onnx = pytest.importorskip(
        "detops_nms.onnx", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed"
    )
    from detops_core.testing import onnx_session

    boxes, scores = _nms_case(8, 61)
    with pytest.raises(Exception, match=f"detops.onnx: {name} cannot be exported: no standard ONNX operator"):
        onnx_session(model, (boxes.float(), scores.float()), onnx.translation_table())
