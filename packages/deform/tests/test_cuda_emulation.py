"""The CUDA kernels of deform_conv2d and its backward (csrc/cuda/deform_kernel.cu), run by
the CPU emulation of the CUDA execution model (detops/cuda_emulation.h) and compared with
the CPU kernels on the kinds of cases the CPU tests cover.

What must be equal, and why:
- Both devices share the entry points, checks, chunking and matrix products
  (deform_entry.h), the sampling math (deform_math.h) and the index formulas
  (deform_layout_math.h), and the emulated products are the same torch matmul on the same
  column buffers, chunked the same way (every case here fits one chunk under both
  backends' default column budgets, or sets the budget for both). The output, the offset,
  mask, weight and bias gradients therefore form the same sums in the same order and must
  be bitwise equal (NaN where the CPU has NaN).
- The input gradient is the exception: the CUDA kernel scatters it with atomicAdd, in
  whatever order the threads run, where the CPU adds each plane's contributions in
  (tap, position) order. Each element is a sum of at most n = K * P terms (K kernel taps,
  P output positions: a tap at a position lands on a given pixel at most once), and the
  terms themselves are computed identically. Two orders of summing n terms in precision
  eps each lie within (n - 1) * eps * sum|terms| of the exact sum, so of each other within
  that much; sum|terms| is bounded by the CPU input gradient of |grad_out|, |weight| and
  |mask| (bilinear weights are non-negative). The tolerance is twice that, in the
  accumulation type's eps (float32 for float16/bfloat16), plus one unit in the last place
  of the stored dtype for float16/bfloat16, whose final rounding may then go either way.
"""

import os
import re

import pytest
import torch
from deform_reference import CONFIGS as SHARED_CONFIGS
from deform_reference import make_case, op_args

from detops_core.testing import assert_same, emulated_launches, require_emulated_ops, run_isolated

PACKAGE = "detops_deform"
CUDA_SOURCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "csrc", "cuda")
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]

# The shared configurations, a smaller large batch than the differential tests' (the
# emulation runs every CUDA thread on the CPU), and cases only the CUDA kernels split on.
CONFIGS = [
    *SHARED_CONFIGS,
    ("batch9", dict(batch=9, in_channels=2, out_channels=3, size=(5, 4), kernel=(2, 2), padding=(0, 1))),
    # More than 16 channels per offset group: im2col_kernel samples 16 channels per thread.
    ("channel_blocks", dict(batch=1, in_channels=36, out_channels=4, size=(5, 5))),
    ("empty_batch", dict(batch=0)),
    ("no_out_channels", dict(out_channels=0)),
]
IDS = [c[0] for c in CONFIGS]


@pytest.fixture(scope="module")
def emulated():
    return require_emulated_ops(PACKAGE)


def _case(dtype, seed=0, **config):
    """make_case, plus a grad_output, with every tensor in `dtype`."""
    args = make_case(dtype=dtype, seed=seed, **config)
    oh, ow = args["offset"].shape[2:]
    g = torch.Generator().manual_seed(seed + 1)
    shape = (args["input"].shape[0], args["weight"].shape[0], oh, ow)
    args["grad_out"] = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    return args


def forward(ops, args):
    return ops.deform_conv2d(*op_args(args))


def backward(ops, args, need=(True, True, True), grad_out=None, weight=None, mask=None):
    return ops._deform_conv2d_backward(
        args["grad_out"] if grad_out is None else grad_out,
        args["input"],
        args["offset"],
        args["weight"] if weight is None else weight,
        args["mask"] if mask is None else mask,
        *op_args(args)[5:],
        *need,
    )


def assert_input_grad_close(actual, expected, args):
    """The input gradient within the reordering bound of the module docstring."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    if actual.numel() == 0:
        return
    dtype = expected.dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    kh, kw = args["weight"].shape[2:]
    n = kh * kw * args["offset"].shape[2] * args["offset"].shape[3]
    # sum|terms| per element, from the CPU kernel on the absolute values (in float64: the
    # bound must not itself round down).
    wide = {k: (v.double() if torch.is_tensor(v) else v) for k, v in args.items()}
    mask = wide["mask"].abs() if wide["mask"] is not None else None
    terms = backward(torch.ops.detops, wide, (True, False, False), wide["grad_out"].abs(), wide["weight"].abs(), mask)[
        0
    ]
    tol = 2 * n * torch.finfo(acc).eps * terms
    if dtype != acc:
        tol = tol + torch.finfo(dtype).eps * expected.double().abs()
    a, e = actual.double(), expected.double()
    assert torch.equal(a.isnan(), e.isnan()), "NaN in different places"
    ok = a.isnan() | (a == e) | ((a - e).abs() <= tol)  # a == e: the same infinity
    worst = ((a - e).abs() - tol).nan_to_num(-1).max().item()
    assert ok.all(), f"input gradient: {int((~ok).sum())} of {ok.numel()} elements beyond the bound (worst by {worst})"


def assert_backward_matches(emu, cpu, args):
    names = ("grad_input", "grad_offset", "grad_weight", "grad_mask", "grad_bias")
    assert_input_grad_close(emu[0], cpu[0], args)
    for name, a, e in zip(names[1:], emu[1:], cpu[1:]):
        assert_same(a, e, what=name)


def check_case(ops, args, need=(True, True, True)):
    """Forward and backward of the emulated CUDA kernels against the CPU kernels."""
    assert_same(forward(ops, args), forward(torch.ops.detops, args), what="output")
    assert_backward_matches(backward(ops, args, need), backward(torch.ops.detops, args, need), args)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_forward_and_backward_equal_cpu(emulated, name, config, dtype):
    check_case(emulated, _case(dtype, **config))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["basic", "groups2_offset_groups4", "stride_pad_dil_mixed"])
def test_channels_last(emulated, name, dtype):
    args = _case(dtype, **dict(CONFIGS)[name])
    for k in ("input", "offset", "mask", "grad_out"):
        if args[k] is not None:
            args[k] = args[k].to(memory_format=torch.channels_last)
    assert args["input"].is_contiguous(memory_format=torch.channels_last) and not args["input"].is_contiguous()
    check_case(emulated, args)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("need", [(i, o, w) for i in (False, True) for o in (False, True) for w in (False, True)])
@pytest.mark.parametrize("use_mask", [True, False])
def test_need_flags(emulated, need, use_mask, dtype):
    # need_weight without need_offset_mask samples the columns with im2col_kernel; with it,
    # coord_kernel writes them on the way. Unneeded gradients come back as zeros.
    args = _case(dtype, in_channels=4, offset_groups=2, use_mask=use_mask)
    check_case(emulated, args, need)


@pytest.mark.parametrize("dtype", DTYPES)
def test_offsets_on_edges_and_outside(emulated, dtype):
    # Offsets on a half-integer grid: many taps land exactly on -1, 0, H - 1 and W - 1, where
    # the value and gradient windows differ, and many far outside the image.
    args = _case(dtype, size=(5, 6), offset_scale=4.0)
    args["offset"] = (args["offset"].double() * 2).round().div(2).to(dtype)
    check_case(emulated, args)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_mask", [True, False])
def test_non_finite_offsets(emulated, dtype, use_mask):
    args = _case(dtype, offset_groups=2, use_mask=use_mask)
    flat = args["offset"].view(-1)
    values = [float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 3e9, -3e9]
    where = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(7))[:40]
    for i, at in enumerate(where.tolist()):
        flat[at] = values[i % len(values)]
    check_case(emulated, args)
    assert torch.isfinite(forward(emulated, args)).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_non_finite_mask(emulated, dtype):
    args = _case(dtype, offset_groups=2)
    args["mask"][0, 3, 1, 1] = float("nan")
    args["mask"][1, 5, 2, 2] = float("inf")
    check_case(emulated, args)
    assert forward(emulated, args).isnan().any()


# A child process per column budget: DETOPS_DEFORM_COLUMN_BYTES is read once per process.
# It checks the emulated kernels against the CPU on several chunks (counted as im2col
# launches, one per chunk) and prints the counts.
_CHUNKED = """
import os, sys, torch
sys.path.insert(0, {tests!r})
import test_cuda_emulation as t
from detops_core.testing import emulated_ops, emulated_launches
ops = emulated_ops(t.PACKAGE)
for dtype in t.DTYPES:
    args = t._case(dtype, seed=3, **{config!r})
    before = emulated_launches(t.PACKAGE).get("deform im2col_kernel", 0)
    t.check_case(ops, args)
    # one im2col launch per chunk in forward; backward (with need_offset_mask) samples
    # columns in coord_kernel instead
    print(dtype, emulated_launches(t.PACKAGE)["deform im2col_kernel"] - before)
"""


def _chunks(config, budget, acc_bytes):
    """The number of chunks deform_entry.h's make_chunks forms."""
    args = make_case(**config)
    B, C = args["input"].shape[:2]
    K = args["weight"].shape[2] * args["weight"].shape[3]
    P = args["offset"].shape[2] * args["offset"].shape[3]
    per_image = C * K * P * acc_bytes
    if per_image <= budget:
        nb = budget // per_image
        return -(-B // nb)
    np_ = -(-P // -(-per_image // budget))
    return B * -(-P // np_)


@pytest.mark.parametrize(
    "kind,budget",
    [
        # 2 images of float32 columns per chunk (1 of float64): a batch of 5 in 3 or 5 chunks.
        ("whole_images", 4 * 9 * 42 * 4 * 2),
        # A third of an image of float32 columns: each image in slices of positions.
        ("position_slices", 4 * 9 * 42 * 4 // 3),
    ],
)
def test_batch_larger_than_a_chunk(emulated, monkeypatch, kind, budget):
    config = dict(batch=5, offset_groups=2, offset_scale=3.0)
    code = _CHUNKED.format(tests=os.path.dirname(os.path.abspath(__file__)), config=config)
    monkeypatch.setenv("DETOPS_DEFORM_COLUMN_BYTES", str(budget))
    out = run_isolated(code, timeout=900)
    counts = dict(line.rsplit(" ", 1) for line in out.strip().splitlines())
    for dtype in DTYPES:
        want = _chunks(config, budget, 8 if dtype == torch.float64 else 4)
        assert want > 1
        assert int(counts[str(dtype)]) == want, (dtype, out)


def test_bad_input_raises_the_cpu_message(emulated):
    args = _case(torch.float32)
    args["offset"] = args["offset"][:, :-2]
    messages = []
    for ops in (torch.ops.detops, emulated):
        with pytest.raises(RuntimeError) as e:
            forward(ops, args)
        messages.append(str(e.value).splitlines()[0])
    assert messages[0] == messages[1]
    assert "offset" in messages[0]


def _kernels_in_sources():
    names = set()
    for file in sorted(os.listdir(CUDA_SOURCES)):
        if file.endswith(".cu"):
            with open(os.path.join(CUDA_SOURCES, file)) as f:
                stem = file.split(".")[0].removesuffix("_kernel")
                names |= {f"{stem} {k}" for k in re.findall(r"__global__\s+void\s+(\w+)", f.read())}
    return names


def test_every_kernel_is_launched(emulated):
    kernels = _kernels_in_sources()
    assert len(kernels) >= 4, kernels
    before = emulated_launches(PACKAGE)
    args = _case(torch.float32)
    check_case(emulated, args)
    check_case(emulated, args, (False, False, True))  # columns from im2col_kernel
    after = emulated_launches(PACKAGE)
    missed = sorted(k for k in kernels if after.get(k, 0) <= before.get(k, 0))
    assert not missed, f"never launched by these cases: {missed}"
    print("emulated launches in this process:", after)
