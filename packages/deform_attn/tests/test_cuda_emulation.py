"""The CUDA kernels of multi_scale_deformable_attention and its backward
(csrc/cuda/deform_attn_kernel.cu), run by the CPU emulation of the CUDA execution model
(detops/cuda_emulation.h) and compared with the CPU kernels.

What must be equal, and why: both devices share the entry point, checks and allocation
(deform_attn_entry.h) and the sampling math (deform_attn_math.h). The forward kernel's
thread for element (row, d) sums levels and points in the CPU kernel's order with the same
expression, and the backward kernel's thread for a sample forms its four dot products with
corner_dots() as the CPU does: the output and the location and weight gradients must be
bitwise equal (NaN where the CPU has NaN).

The value gradient is the exception: the CUDA kernel adds each sample's share with
atomicAdd, in whatever order threads run; the CPU adds them in (query, point) order. Each
element is a sum of n <= Q * P * 4 terms computed identically; two orders of summing n terms
lie within (n - 1) * eps * sum|terms| of each other, and sum|terms| is the CPU value
gradient of |grad_output| and |attention_weights| (bilinear weights are non-negative). The
tolerance is twice that, in the accumulation type's eps (float32 for float16/bfloat16), plus
one unit in the last place of the stored dtype for float16/bfloat16.
"""

import pytest
import torch
from deform_attn_reference import NAMES, make_case, start_index

from detops_core.testing import require_emulated_ops

PACKAGE = "detops_deform_attn"
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]

CONFIGS = [
    ("basic", dict()),
    ("one_level", dict(shapes=((6, 7),))),
    ("five_levels_odd", dict(shapes=((9, 11), (5, 7), (3, 3), (1, 5), (7, 1)))),
    ("one_point", dict(points=1)),
    ("eight_points", dict(points=8, shapes=((5, 5), (3, 2)))),
    ("head_dim_odd", dict(heads=3, head_dim=7)),
    ("head_dim_1", dict(head_dim=1)),
    ("far_outside", dict(spread=1.5)),
    ("many_queries", dict(queries=70, heads=2, head_dim=4)),
    ("empty_batch", dict(batch=0)),
    ("no_points", dict(points=0)),
]
IDS = [c[0] for c in CONFIGS]


@pytest.fixture(scope="module")
def emulated():
    return require_emulated_ops(PACKAGE)


def _case(dtype, seed=0, **config):
    case = make_case(dtype=dtype, seed=seed, **config)
    b, q = case["sampling_locations"].shape[:2]
    h, d = case["value"].shape[2:]
    g = torch.Generator().manual_seed(seed + 1)
    case["grad"] = torch.randn(b, q, h * d, generator=g, dtype=torch.float64).to(dtype)
    return case


def forward(ops, case):
    return ops.multi_scale_deformable_attention(*(case[k] for k in NAMES), start_index(case["value_spatial_shapes"]))


def backward(ops, case, need=(True, True), grad=None, attn=None):
    args = [case[k] for k in NAMES]
    if attn is not None:
        args[3] = attn
    return ops._multi_scale_deformable_attention_backward(case["grad"] if grad is None else grad, *args, None, *need)


def assert_same(actual, expected, what):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{what}: {m}")


def assert_value_grad_close(actual, expected, case):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    if actual.numel() == 0:
        return
    dtype = expected.dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    q, _, levels, points = case["attention_weights"].shape[1:]
    n = q * levels * points * 4
    wide = {k: (v.double() if v.is_floating_point() else v) for k, v in case.items()}
    terms = backward(torch.ops.detops, wide, (True, False), wide["grad"].abs(), wide["attention_weights"].abs())[0]
    tol = 2 * n * torch.finfo(acc).eps * terms
    if dtype != acc:
        tol = tol + torch.finfo(dtype).eps * expected.double().abs()
    a, e = actual.double(), expected.double()
    assert torch.equal(a.isnan(), e.isnan()), "NaN in different places"
    ok = a.isnan() | (a == e) | ((a - e).abs() <= tol)
    assert ok.all(), f"value gradient: {int((~ok).sum())} of {ok.numel()} elements beyond the bound"


def check_case(ops, case, need=(True, True)):
    assert_same(forward(ops, case), forward(torch.ops.detops, case), "output")
    emu, cpu = backward(ops, case, need), backward(torch.ops.detops, case, need)
    assert_value_grad_close(emu[0], cpu[0], case)
    assert_same(emu[1], cpu[1], "grad_sampling_locations")
    assert_same(emu[2], cpu[2], "grad_attention_weights")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_forward_and_backward_equal_cpu(emulated, name, config, dtype):
    check_case(emulated, _case(dtype, **config))


@pytest.mark.parametrize("need", [(True, False), (False, True), (False, False)])
def test_need_flags(emulated, need):
    check_case(emulated, _case(torch.float32), need)


@pytest.mark.parametrize("dtype", DTYPES)
def test_locations_on_borders_and_outside(emulated, dtype):
    shapes = ((4, 8), (2, 4), (1, 2))
    case = _case(dtype, shapes=shapes, points=8, queries=12)
    g = torch.Generator().manual_seed(3)
    loc = case["sampling_locations"]
    for level, (h, w) in enumerate(shapes):
        for axis, size in ((0, w), (1, h)):
            k = torch.randint(-5, 2 * size + 6, loc[:, :, :, level, :, axis].shape, generator=g)
            loc[:, :, :, level, :, axis] = (k.double() / (2 * size)).to(dtype)
    check_case(emulated, case)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_non_finite_locations_and_weights(emulated, dtype):
    case = _case(dtype, points=3, queries=9)
    flat = case["sampling_locations"].view(-1)
    values = [float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 3e9]
    where = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(7))[:30]
    for i, at in enumerate(where.tolist()):
        flat[at] = values[i % len(values)]
    case["attention_weights"].view(-1)[5] = float("nan")
    check_case(emulated, case)


# Levels that do not describe value (the CPU raises on each: test_edge_cases.py). On CUDA
# nothing of value_spatial_shapes or value_level_start_index is read on the host, so the
# level-table kernel finds them, and every output and gradient element is NaN.
BAD_LEVELS = [
    ("sum_mismatch", torch.tensor([[4, 5], [3, 2]]), None),
    ("zero_level", torch.tensor([[0, 5], [29, 1]]), None),
    ("negative_level", torch.tensor([[-4, -5], [7, 4]]), None),
    ("huge_level", torch.tensor([[2**40, 2**40], [3, 3]]), None),
    ("overflowing_product", torch.tensor([[2**31 - 1, 2**31 - 1], [3, 3]]), None),
    ("start_index", torch.tensor([[4, 5], [3, 3]]), torch.tensor([0, 21])),
]


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("name,shapes,starts", BAD_LEVELS, ids=[b[0] for b in BAD_LEVELS])
def test_invalid_levels_give_nan(emulated, name, shapes, starts, deterministic):
    case = _case(torch.float32, shapes=((4, 5), (3, 3)))
    args = [case["value"], shapes, case["sampling_locations"], case["attention_weights"], starts]
    with pytest.raises(RuntimeError, match="value_spatial_shapes|value_level_start_index"):
        torch.ops.detops.multi_scale_deformable_attention(*args)
    out = emulated.multi_scale_deformable_attention(*args)
    grads = emulated._multi_scale_deformable_attention_backward(case["grad"], *args, True, True, deterministic)
    for what, t in zip(("output", "grad_value", "grad_sampling_locations", "grad_attention_weights"), (out, *grads)):
        assert t.numel() > 0 and t.isnan().all(), f"{what}: {int((~t.isnan()).sum())} elements not NaN"


def test_valid_levels_given_on_the_host_and_on_the_device(emulated):
    # The level table is built on the device from either; a correct start index is accepted.
    case = _case(torch.float64, shapes=((4, 5), (3, 3)))
    check_case(emulated, case)
    assert not forward(emulated, case).isnan().any()


def test_metadata_errors_still_raise(emulated):
    case = _case(torch.float32)
    with pytest.raises(RuntimeError, match="value_spatial_shapes must be an int64 tensor"):
        emulated.multi_scale_deformable_attention(
            case["value"], case["value_spatial_shapes"].double(), case["sampling_locations"], case["attention_weights"]
        )
    with pytest.raises(RuntimeError, match="value_level_start_index must be a 1-D tensor"):
        emulated.multi_scale_deformable_attention(*(case[k] for k in NAMES), torch.tensor([0]))
