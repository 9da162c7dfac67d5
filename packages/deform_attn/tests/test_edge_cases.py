"""Bad input raises a RuntimeError naming the argument; unusual but valid input (NaN or
infinite locations, empty dimensions) has the result the package documents; the CPU
backward is bitwise repeatable whatever the thread count."""

import pytest
import torch
from deform_attn_reference import make_case, reference_msda, start_index

import detops_deform_attn
from detops_core.testing import run_isolated

OP = detops_deform_attn.multi_scale_deformable_attention
NAMES = ("value", "value_spatial_shapes", "sampling_locations", "attention_weights")


def _args(case):
    return [case[k] for k in NAMES]


def _bad(**changes):
    case = make_case(shapes=((4, 5), (3, 3)))
    case.update(changes)
    return case


BAD = [
    ("value_3d", lambda c: {"value": c["value"][0]}, "value must be a 4-D tensor"),
    ("value_int", lambda c: {"value": c["value"].long()}, "value must be a floating-point tensor"),
    (
        "shapes_1d",
        lambda c: {"value_spatial_shapes": c["value_spatial_shapes"][0]},
        "value_spatial_shapes must be a 2-D",
    ),
    (
        "shapes_3_cols",
        lambda c: {"value_spatial_shapes": torch.tensor([[4, 5, 1], [3, 3, 1]])},
        "value_spatial_shapes must have shape [num_levels, 2]",
    ),
    (
        "shapes_float",
        lambda c: {"value_spatial_shapes": c["value_spatial_shapes"].double()},
        "value_spatial_shapes must be an int64 tensor",
    ),
    ("no_levels", lambda c: {"value_spatial_shapes": torch.zeros(0, 2, dtype=torch.int64)}, "at least one level"),
    ("sum_mismatch", lambda c: {"value_spatial_shapes": torch.tensor([[4, 5], [3, 2]])}, "sum(height * width) = 26"),
    (
        "zero_level",
        lambda c: {"value_spatial_shapes": torch.tensor([[0, 5], [29, 1]])},
        "value_spatial_shapes[0] = (0, 5) must be a positive",
    ),
    (
        "negative_level",
        lambda c: {"value_spatial_shapes": torch.tensor([[-4, -5], [3, 3]])},
        "must be a positive (height, width)",
    ),
    ("huge_level", lambda c: {"value_spatial_shapes": torch.tensor([[2**40, 2**40], [3, 3]])}, "2^31 pixels or more"),
    ("loc_5d", lambda c: {"sampling_locations": c["sampling_locations"][..., 0]}, "sampling_locations must be a 6-D"),
    (
        "loc_levels",
        lambda c: {"sampling_locations": c["sampling_locations"][:, :, :, :1]},
        "sampling_locations must have shape",
    ),
    (
        "loc_last_3",
        lambda c: {"sampling_locations": torch.cat([c["sampling_locations"], c["sampling_locations"][..., :1]], -1)},
        "sampling_locations must have shape",
    ),
    ("loc_batch", lambda c: {"sampling_locations": c["sampling_locations"][:1]}, "sampling_locations must have shape"),
    (
        "loc_heads",
        lambda c: {"sampling_locations": c["sampling_locations"][:, :, :1]},
        "sampling_locations must have shape",
    ),
    (
        "attn_points",
        lambda c: {"attention_weights": c["attention_weights"][..., :1]},
        "attention_weights must have shape",
    ),
    (
        "attn_queries",
        lambda c: {"attention_weights": c["attention_weights"][:, :1]},
        "attention_weights must have shape",
    ),
    ("attn_4d", lambda c: {"attention_weights": c["attention_weights"][..., 0]}, "attention_weights must be a 5-D"),
    (
        "loc_dtype",
        lambda c: {"sampling_locations": c["sampling_locations"].float()},
        "value and sampling_locations must have the same dtype",
    ),
    (
        "attn_dtype",
        lambda c: {"attention_weights": c["attention_weights"].float()},
        "value and attention_weights must have the same dtype",
    ),
]


@pytest.mark.parametrize("name,change,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises(name, change, message):
    case = make_case(shapes=((4, 5), (3, 3)))
    case.update(change(case))
    with pytest.raises(RuntimeError, match="detops.multi_scale_deformable_attention: ") as e:
        OP(*_args(case))
    assert message in str(e.value)


@pytest.mark.parametrize(
    "index,message",
    [
        (torch.tensor([0, 21]), "value_level_start_index[1] = 21"),
        (torch.tensor([0]), "value_level_start_index must be a 1-D tensor of shape [num_levels] = [2]"),
        (torch.tensor([0.0, 20.0]), "value_level_start_index must be an int64 tensor"),
    ],
)
def test_bad_level_start_index(index, message):
    case = make_case(shapes=((4, 5), (3, 3)))
    with pytest.raises(RuntimeError, match="value_level_start_index") as e:
        OP(*_args(case), index)
    assert message in str(e.value)


def test_backward_checks_grad_output():
    case = make_case()
    op = torch.ops.detops._multi_scale_deformable_attention_backward
    with pytest.raises(RuntimeError, match="grad_output must have the output's shape"):
        op(torch.zeros(2, 5, 5, dtype=torch.float64), *_args(case))
    with pytest.raises(RuntimeError, match="value and grad_output must have the same dtype"):
        op(torch.zeros(2, 5, 6), *_args(case))


def test_crafted_sizes_never_read_out_of_bounds():
    # A level table claiming more rows than value has, hidden behind a matching total, and
    # shapes whose product overflows int64: both must be refused before any kernel runs.
    out = run_isolated(
        """
        import torch, detops_deform_attn as d
        v = torch.zeros(1, 6, 1, 2); loc = torch.full((1, 1, 1, 2, 1, 2), 0.99); w = torch.ones(1, 1, 1, 2, 1)
        for shapes in ([[3, 3], [-1, 3]], [[2**32, 2**32], [1, 6]], [[3, 2**62], [1, 6]]):
            try:
                d.multi_scale_deformable_attention(v, torch.tensor(shapes), loc, w)
                print("no error", shapes)
            except RuntimeError as e:
                print("raised")
        """
    )
    assert out.split() == ["raised"] * 3


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_non_finite_locations(dtype):
    # Documented: a NaN or infinite location samples zero, with zero gradient for itself,
    # its weight and the value; other samples are unaffected.
    case = make_case(dtype=dtype, points=3, queries=6)
    loc = case["sampling_locations"]
    bad = torch.zeros(loc.shape[:-1], dtype=torch.bool)
    bad.view(-1)[::4] = True
    values = [float("nan"), float("inf"), -float("inf"), 1e30]
    for i, at in enumerate(bad.view(-1).nonzero().view(-1).tolist()):
        loc.view(-1, 2)[at, i % 2] = values[i % len(values)]
    leaves = {k: case[k].clone().requires_grad_() for k in ("value", "sampling_locations", "attention_weights")}
    out = OP(leaves["value"], case["value_spatial_shapes"], leaves["sampling_locations"], leaves["attention_weights"])
    assert torch.isfinite(out).all()
    out.backward(torch.ones_like(out))
    assert (leaves["sampling_locations"].grad[bad] == 0).all()
    assert (leaves["attention_weights"].grad[bad] == 0).all()
    assert all(torch.isfinite(leaves[k].grad).all() for k in leaves)
    # Same as giving those samples zero weight.
    weights = case["attention_weights"].masked_fill(bad, 0)
    safe_loc = case["sampling_locations"].masked_fill(bad[..., None], 0.5)
    expected = reference_msda(case["value"], case["value_spatial_shapes"], safe_loc, weights)
    torch.testing.assert_close(out.detach(), expected, rtol=1e-5, atol=1e-5)


def test_non_finite_weight_propagates():
    case = make_case()
    case["attention_weights"][0, 1, 0, 0, 0] = float("nan")
    out = OP(*_args(case))
    assert out[0, 1, : case["value"].shape[3]].isnan().all()
    assert not out[1].isnan().any()


@pytest.mark.parametrize(
    "config",
    [dict(batch=0), dict(queries=0), dict(heads=0), dict(head_dim=0), dict(points=0)],
    ids=["batch0", "queries0", "heads0", "head_dim0", "points0"],
)
def test_empty_dimensions(config):
    case = make_case(**config)
    leaves = {k: case[k].clone().requires_grad_() for k in ("value", "sampling_locations", "attention_weights")}
    out = OP(leaves["value"], case["value_spatial_shapes"], leaves["sampling_locations"], leaves["attention_weights"])
    expected = reference_msda(
        case["value"], case["value_spatial_shapes"], case["sampling_locations"], case["attention_weights"]
    )
    assert out.shape == expected.shape
    torch.testing.assert_close(out.detach(), expected)
    out.sum().backward()
    for k, t in leaves.items():
        assert t.grad.shape == t.shape and (t.grad == 0).all(), k


def test_non_contiguous_inputs():
    case = make_case(queries=4)
    value = case["value"].transpose(0, 1).contiguous().transpose(0, 1)
    loc = case["sampling_locations"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not value.is_contiguous() and not loc.is_contiguous()
    out = OP(value, case["value_spatial_shapes"], loc, case["attention_weights"])
    torch.testing.assert_close(out, OP(*_args(case)), rtol=0, atol=0)


def test_backward_bitwise_repeatable_across_threads():
    case = make_case(
        dtype=torch.float32, batch=2, heads=3, head_dim=8, queries=300, shapes=((6, 7), (3, 4), (2, 2)), points=4
    )
    grad = torch.randn(2, 300, 24)
    op = torch.ops.detops._multi_scale_deformable_attention_backward
    saved = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3, 1):
            torch.set_num_threads(threads)
            results.append(op(grad, *_args(case), start_index(case["value_spatial_shapes"])))
    finally:
        torch.set_num_threads(saved)
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            assert torch.equal(a, b)
