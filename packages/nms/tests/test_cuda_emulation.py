"""nms, batched_nms and nms_per_image through their CUDA kernels (csrc/cuda/nms_kernel.cu:
mask_kernel, keep_kernel), and soft_nms / batched_soft_nms through theirs
(csrc/cuda/soft_nms_kernel.cu: group_start_kernel, soft_kernel, gather_kernel), run by the
CPU emulation of the CUDA execution model
(detops/cuda_emulation.h), against the CPU kernels on the kinds of input that
test_differential.py gives the CPU kernels.

Kept indices must be equal, order included, for every dtype: both devices rank boxes with
the same stable descending score sort (NaN first; then stably by class for batched_nms),
compute every IoU in acc_t (float32 for float16, bfloat16 and float32, float64 for
float64) with the same nms_math.h functions, operation for operation, and compare it with
the same threshold_in<T> value. So no rounding difference is allowed, not even for float32.
What the emulation cannot see: it sorts with torch's CPU sort where a GPU runs the CUDA one
(both documented stable with NaN first), and it compiles the host branch of nms_math.h's
mul() where a GPU runs mul.rn (the same IEEE rounding).
"""

import glob
import math
import os
import re

import pytest
import torch
from nms_cases import bad_calls
from nms_reference import clustered_boxes, random_boxes, sparse_boxes

from detops_core.testing import (
    EMULATION_NAMESPACE,
    emulated_launches,
    emulation,
    host_synchronisations,
    require_emulated_ops,
)
from detops_core.testing.host_sync import SIZE_FROM_DATA

PACKAGE = "detops_nms"
CUDA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "csrc", "cuda")
TILE = 64  # boxes per mask word and per mask_kernel block
MAX_GRID_Y = 65535  # a GPU's limit on gridDim.y, along which mask_kernel lays its row tiles

LAYOUTS = {"random": lambda n, g: random_boxes(n, g), "clustered": clustered_boxes, "sparse": sparse_boxes}
# One box; one partial tile; exactly one and two full tiles; a last tile of a single box;
# and 11 words with a ragged last tile, so keep_kernel carries suppression across many.
SIZES = [1, 2, 63, 64, 65, 128, 130, 700]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.fixture(scope="module")
def emulated():
    return require_emulated_ops(PACKAGE)


def _scores(n, g, ties):
    if ties:  # five distinct values: long runs of equal scores spanning several tiles
        return torch.randint(0, 5, (n,), generator=g).float() / 4
    return torch.rand(n, generator=g)


def _assert_equal(got, expected):
    assert got.dtype == torch.int64 and expected.dtype == torch.int64
    if not torch.equal(got, expected):
        common = min(len(got), len(expected))
        first = next((k for k in range(common) if got[k] != expected[k]), common)
        raise AssertionError(
            f"kept {len(got)} boxes, the CPU kernel {len(expected)}; first difference at position {first}: "
            f"{got[first : first + 5].tolist()} vs {expected[first : first + 5].tolist()}"
        )


def _check(emulated, boxes, scores, threshold, idxs=None):
    _assert_equal(emulated.nms(boxes, scores, threshold), torch.ops.detops.nms(boxes, scores, threshold))
    if idxs is not None:
        _assert_equal(
            emulated.batched_nms(boxes, scores, idxs, threshold),
            torch.ops.detops.batched_nms(boxes, scores, idxs, threshold),
        )


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_nms_equals_cpu(emulated, layout, n, ties, threshold):
    g = torch.Generator().manual_seed(n * 31 + int(threshold * 10) + 7 * ties)
    _check(emulated, LAYOUTS[layout](n, g), _scores(n, g, ties), threshold)


@pytest.mark.parametrize("threshold", [0.0, 0.5])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("classes", [1, 3, 80])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_batched_nms_equals_cpu(emulated, layout, classes, ties, threshold):
    n = 700
    g = torch.Generator().manual_seed(classes * 7 + int(threshold * 10) + ties)
    boxes = LAYOUTS[layout](n, g)
    scores = _scores(n, g, ties)
    idxs = torch.randint(0, classes, (n,), generator=g)
    _check(emulated, boxes, scores, threshold, idxs)


def test_batched_nms_with_extreme_class_labels(emulated):
    # Negative and huge labels: classes ascend as signed int64 along the sorted list, which
    # mask_kernel relies on to skip column tiles that hold no box of the row's class.
    g = torch.Generator().manual_seed(11)
    n = 400
    boxes = clustered_boxes(n, g, clusters=3)
    scores = torch.rand(n, generator=g)
    labels = torch.tensor([-(2**63), -(2**62), -1, 0, 1, 2**62, 2**63 - 1])
    idxs = labels[torch.randint(0, len(labels), (n,), generator=g)]
    for threshold in (0.0, 0.5):
        _check(emulated, boxes, scores, threshold, idxs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_equals_cpu(emulated, dtype):
    g = torch.Generator().manual_seed(3)
    n = 500
    boxes = clustered_boxes(n, g).to(dtype)
    scores = torch.rand(n, generator=g).to(dtype)
    idxs = torch.randint(0, 4, (n,), generator=g)
    for threshold in (0.3, 0.5, 0.7):
        _check(emulated, boxes, scores, threshold, idxs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_and_inf_equal_cpu(emulated, dtype):
    g = torch.Generator().manual_seed(5)
    n = 300
    boxes = clustered_boxes(n, g)
    scores = torch.rand(n, generator=g)
    scores[::17] = float("nan")
    scores[1::23] = float("inf")
    scores[2::29] = -float("inf")
    boxes[3::11, 0] = float("nan")
    boxes[5::13, 2] = float("inf")
    boxes[7::19, 1] = -float("inf")
    boxes[9::31] = float("inf")  # inf - inf: NaN areas
    idxs = torch.randint(0, 3, (n,), generator=g)
    for threshold in (0.0, 0.5, 1.0):
        _check(emulated, boxes.to(dtype), scores.to(dtype), threshold, idxs)


@pytest.mark.parametrize("threshold", [0.0, 0.25, 1 / 3, 0.5, 2 / 3, 1.0])
def test_iou_exactly_at_threshold_equals_cpu(emulated, threshold):
    # Boxes on a small integer grid: IoUs are small fractions, many exactly 1/4, 1/2 or 1,
    # so pairs sit exactly at the threshold (not suppressed: IoU > threshold is required),
    # and 1/3 and 2/3 round in float32 to either side of the double threshold.
    g = torch.Generator().manual_seed(13)
    n = 300
    corner = torch.randint(0, 6, (n, 2), generator=g).float()
    boxes = torch.cat((corner, corner + torch.randint(1, 4, (n, 2), generator=g).float()), dim=1)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, 2, (n,), generator=g)
    _check(emulated, boxes, scores, threshold, idxs)
    if threshold in (0.25, 0.5):
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
        rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=2)
        iou = inter / (area[:, None] + area[None, :] - inter)
        assert (iou == threshold).sum() > 100  # the case this test is about does occur


def test_iou_exactly_at_threshold_across_tiles(emulated):
    # The pair (IoU exactly 0.5) lands in different tiles: box 1 ranks 64th, the boxes
    # between are far away. 0.5 keeps both; anything below suppresses box 1.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0]] + [[1000.0 * k, 1000.0, 1000.0 * k + 1, 1001.0] for k in range(64)])
    boxes[64] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    scores = torch.linspace(1, 0, 65)
    keep = emulated.nms(boxes, scores, 0.5)
    _assert_equal(keep, torch.arange(65))
    _assert_equal(emulated.nms(boxes, scores, 0.49), torch.arange(64))
    _check(emulated, boxes, scores, 0.5, torch.zeros(65, dtype=torch.int64))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_empty_input_launches_nothing(emulated, dtype):
    before = emulated_launches(PACKAGE)
    boxes, scores, idxs = torch.zeros(0, 4, dtype=dtype), torch.zeros(0, dtype=dtype), torch.zeros(0, dtype=torch.int64)
    for out in (emulated.nms(boxes, scores, 0.5), emulated.batched_nms(boxes, scores, idxs, 0.5)):
        assert out.dtype == torch.int64 and out.shape == (0,)
    assert emulated_launches(PACKAGE) == before


def test_non_contiguous_inputs_equal_cpu(emulated):
    g = torch.Generator().manual_seed(4)
    n = 300
    boxes = clustered_boxes(n, g)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, 3, (n,), generator=g)
    wide = torch.zeros(n, 9)
    wide[:, 1:9:2] = boxes
    strided_boxes = wide[:, 1:9:2]
    strided_scores = torch.stack((scores, scores), dim=1)[:, 0]
    strided_idxs = torch.stack((idxs, idxs), dim=1)[:, 1]
    assert not strided_boxes.is_contiguous() and not strided_scores.is_contiguous()
    _check(emulated, strided_boxes, strided_scores, 0.5, strided_idxs)
    _assert_equal(emulated.nms(strided_boxes, strided_scores, 0.5), torch.ops.detops.nms(boxes, scores, 0.5))


def _kernels_in_sources():
    """ "<file stem> <kernel>" of every __global__ function under csrc/cuda, named as the
    emulation's launch record names them (a trailing _kernel dropped from the stem)."""
    names = set()
    for path in glob.glob(os.path.join(CUDA_DIR, "*.cu")):
        stem = os.path.basename(path).split(".")[0]
        stem = stem[: -len("_kernel")] if stem.endswith("_kernel") and stem != "_kernel" else stem
        with open(path) as f:
            for kernel in re.findall(r"__global__\s+void\s+(\w+)", f.read()):
                names.add(f"{stem} {kernel}")
    return names


def test_every_kernel_is_launched(emulated):
    kernels = {k for k in _kernels_in_sources() if k.startswith("nms ")}
    assert kernels >= {"nms mask_kernel", "nms keep_kernel"}
    before = emulated_launches(PACKAGE)
    g = torch.Generator().manual_seed(6)
    boxes, scores = clustered_boxes(130, g), torch.rand(130, generator=g)
    _check(emulated, boxes, scores, 0.5, torch.randint(0, 3, (130,), generator=g))
    after = emulated_launches(PACKAGE)
    for kernel in sorted(kernels):
        # nms and batched_nms launch each kernel once.
        assert after.get(kernel, 0) - before.get(kernel, 0) == 2, (kernel, before, after)


def test_ops_that_keep_a_data_dependent_count_read_it_on_the_host(emulated):
    # The one exception to "no op synchronises" (SIZE_FROM_DATA, which the emulated namespace
    # does not check), and the proof that the check sees what the CUDA host code runs.
    g = torch.Generator().manual_seed(8)
    boxes, scores, idxs = clustered_boxes(50, g), torch.rand(50, generator=g), torch.randint(0, 3, (50,), generator=g)
    rotated = torch.cat((boxes[:, :2], boxes[:, 2:] - boxes[:, :2], torch.zeros(50, 1)), dim=1)
    calls = {
        "nms": (boxes, scores, 0.5),
        "batched_nms": (boxes, scores, idxs, 0.5),
        "nms_per_image": (boxes[None], scores[None], idxs[None], 0.5),
        "soft_nms": (boxes, scores),
        "batched_soft_nms": (boxes, scores, idxs),
        "nms_rotated": (rotated, scores, 0.5),
        "batched_nms_rotated": (rotated, scores, idxs, 0.5),
    }
    assert set(calls) == SIZE_FROM_DATA
    raw = getattr(torch.ops, EMULATION_NAMESPACE)
    for op, args in calls.items():
        _, waits = host_synchronisations(getattr(raw, op), *args)
        assert waits and set(waits) == {"aten::nonzero"}, (op, waits)


def test_the_emulated_namespace_fails_a_call_that_synchronises(emulated, monkeypatch):
    monkeypatch.setattr(emulation, "SIZE_FROM_DATA", frozenset())  # nms checked like any op
    g = torch.Generator().manual_seed(9)
    with pytest.raises(AssertionError, match=r"detops::nms synchronises .*aten::nonzero"):
        emulated.nms(clustered_boxes(20, g), torch.rand(20, generator=g), 0.5)


def test_more_boxes_than_the_grid_can_tile_raise_before_any_launch(emulated):
    # mask_kernel runs one block per (row tile, column tile): ceil(n / 64) row tiles along
    # gridDim.y, which a GPU (and the emulation) caps at 65535. The entry point must refuse
    # the first n that needs more, before allocating or launching anything; the inputs are
    # stride-0 views, so this costs no memory.
    n = MAX_GRID_Y * TILE + 1
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(n, 4)
    scores = torch.zeros(1).expand(n)
    idxs = torch.zeros(1, dtype=torch.int64).expand(n)
    before = emulated_launches(PACKAGE)
    for call in (lambda: emulated.nms(boxes, scores, 0.5), lambda: emulated.batched_nms(boxes, scores, idxs, 0.5)):
        with pytest.raises(RuntimeError, match=r"at most \d+ boxes are supported on this device, got 4194241") as e:
            call()
        limit = int(re.search(r"at most (\d+) boxes", str(e.value)).group(1))
        # The limit is exactly the largest n whose row tiles fit in gridDim.y.
        assert math.ceil(limit / TILE) == MAX_GRID_Y and math.ceil((limit + 1) / TILE) > MAX_GRID_Y
    assert emulated_launches(PACKAGE) == before


def _is_meta(value):
    return isinstance(value, torch.Tensor) and value.is_meta


# The emulated CUDA ops take CPU tensors: meta ones would not reach their kernels.
@pytest.mark.parametrize(
    "op, args",
    [pytest.param(op, args, id=name) for name, op, args, _ in bad_calls() if not any(_is_meta(a) for a in args)],
)
def test_bad_input_raises_the_cpu_message(emulated, op, args):
    with pytest.raises(RuntimeError) as cpu:
        op(*args)
    with pytest.raises(RuntimeError) as emu:
        getattr(emulated, op.overloadpacket.__name__)(*args)
    assert str(emu.value).splitlines()[0] == str(cpu.value).splitlines()[0]


# ---------------------------------------------------------------------------------------
# max_output and nms_per_image (keep_kernel's early stop; per-image calls of both kernels)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_max_output_equals_cpu(emulated, layout):
    # Limits inside the first tile, at its end, one past it and beyond every kept box.
    g = torch.Generator().manual_seed(21)
    n = 300
    boxes, scores = LAYOUTS[layout](n, g), _scores(n, g, ties=True)
    idxs = torch.randint(0, 3, (n,), generator=g)
    for k in (0, 1, 2, 63, 64, 65, 200, 10**9):
        for threshold in (0.0, 0.5):
            _assert_equal(emulated.nms(boxes, scores, threshold, k), torch.ops.detops.nms(boxes, scores, threshold, k))
            _assert_equal(
                emulated.batched_nms(boxes, scores, idxs, threshold, k),
                torch.ops.detops.batched_nms(boxes, scores, idxs, threshold, k),
            )


@pytest.mark.parametrize("with_idxs", [False, True], ids=["nms", "batched"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nms_per_image_equals_cpu(emulated, dtype, with_idxs):
    g = torch.Generator().manual_seed(22)
    boxes = torch.stack([clustered_boxes(130, g), random_boxes(130, g), sparse_boxes(130, g)]).to(dtype)
    scores = _scores(3 * 130, g, ties=True).reshape(3, 130).to(dtype)
    idxs = torch.randint(0, 3, (3, 130), generator=g) if with_idxs else None
    for k in (None, 0, 1, 70):
        got = emulated.nms_per_image(boxes, scores, idxs, 0.5, k)
        expected = torch.ops.detops.nms_per_image(boxes, scores, idxs, 0.5, k)
        assert got.shape[1:] == (2,) and torch.equal(got, expected), k


# ---------------------------------------------------------------------------------------
# soft_nms / batched_soft_nms (csrc/cuda/soft_nms_kernel.cu). The decayed scores must be
# identical too: the emulation computes the weight with the host's exp, as the CPU kernel
# does (a GPU's double exp may differ in the last bit; test_cpu_vs_cuda.py states that).


def _soft_check(emulated, boxes, scores, idxs=None, **kw):
    args = dict(iou_threshold=0.3, sigma=0.5, score_threshold=0.001, method="gaussian") | kw
    values = (args["iou_threshold"], args["sigma"], args["score_threshold"], args["method"])
    if idxs is None:
        got, expected = emulated.soft_nms(boxes, scores, *values), torch.ops.detops.soft_nms(boxes, scores, *values)
    else:
        got = emulated.batched_soft_nms(boxes, scores, idxs, *values)
        expected = torch.ops.detops.batched_soft_nms(boxes, scores, idxs, *values)
    _assert_equal(got[0], expected[0])
    assert got[1].dtype == expected[1].dtype
    assert torch.equal(got[1].isnan(), expected[1].isnan())
    assert torch.equal(got[1].nan_to_num(), expected[1].nan_to_num())


@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("n", [1, 2, 127, 128, 129, 300])  # around one block of threads
@pytest.mark.parametrize("layout", ["clustered", "random"])
def test_soft_nms_equals_cpu(emulated, layout, n, ties, method):
    g = torch.Generator().manual_seed(n * 3 + ties)
    boxes, scores = LAYOUTS[layout](n, g), _scores(n, g, ties)
    _soft_check(emulated, boxes, scores, method=method)
    _soft_check(emulated, boxes, scores, method=method, score_threshold=0.2, sigma=0.1, iou_threshold=0.6)


@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize("classes", [1, 3, 40])
def test_batched_soft_nms_equals_cpu(emulated, classes, method):
    g = torch.Generator().manual_seed(classes)
    n = 300
    boxes, scores = clustered_boxes(n, g), _scores(n, g, ties=True)
    idxs = torch.randint(0, classes, (n,), generator=g) * 7919 - 1000
    _soft_check(emulated, boxes, scores, idxs, method=method)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_soft_nms_every_dtype_nan_and_inf_equal_cpu(emulated, dtype):
    g = torch.Generator().manual_seed(23)
    n = 150
    boxes, scores = clustered_boxes(n, g), torch.rand(n, generator=g)
    scores[::17] = float("nan")
    scores[1::23] = float("inf")
    boxes[3::11, 0] = float("nan")
    boxes[5::13, 2] = float("inf")
    boxes[9::31] = boxes[10::31]  # identical boxes: linear weight exactly 0
    idxs = torch.randint(0, 3, (n,), generator=g)
    for method in ("gaussian", "linear"):
        _soft_check(emulated, boxes.to(dtype), scores.to(dtype), method=method)
        _soft_check(emulated, boxes.to(dtype), scores.to(dtype), idxs, method=method)


def test_soft_nms_empty_input_launches_nothing(emulated):
    before = emulated_launches(PACKAGE)
    boxes, scores, idxs = torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    for keep, kept in (emulated.soft_nms(boxes, scores), emulated.batched_soft_nms(boxes, scores, idxs)):
        assert keep.shape == (0,) and kept.shape == (0,) and keep.dtype == torch.int64
    assert emulated_launches(PACKAGE) == before


def test_every_soft_nms_kernel_is_launched(emulated):
    kernels = {k for k in _kernels_in_sources() if k.startswith("soft_nms ")}
    assert kernels == {"soft_nms group_start_kernel", "soft_nms soft_kernel", "soft_nms gather_kernel"}
    before = emulated_launches(PACKAGE)
    g = torch.Generator().manual_seed(24)
    boxes, scores = clustered_boxes(130, g), torch.rand(130, generator=g)
    _soft_check(emulated, boxes, scores, torch.randint(0, 3, (130,), generator=g))
    after = emulated_launches(PACKAGE)
    for kernel in sorted(kernels):  # batched_soft_nms launches each once
        assert after.get(kernel, 0) - before.get(kernel, 0) == 1, (kernel, before, after)
