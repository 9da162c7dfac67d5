"""The CPU op against the grid_sample reference (deform_attn_reference.py), forward and
all three gradients, in float64 and float32; gradcheck in float64."""

import pytest
import torch
from deform_attn_reference import NAMES, make_case, reference_msda, start_index

import detops_deform_attn

GRAD_NAMES = ("value", "sampling_locations", "attention_weights")

CONFIGS = [
    ("basic", dict()),
    ("one_level", dict(shapes=((6, 7),))),
    ("five_levels_odd", dict(shapes=((9, 11), (5, 7), (3, 3), (1, 5), (7, 1)))),
    ("one_point", dict(points=1)),
    ("eight_points", dict(points=8, shapes=((5, 5), (3, 2)))),
    ("one_pixel_levels", dict(shapes=((1, 1), (1, 1)))),
    ("many_heads_wide", dict(heads=8, head_dim=13, queries=3)),
    ("head_dim_1", dict(head_dim=1)),
    ("batch1_q1", dict(batch=1, queries=1)),
    ("far_outside", dict(spread=1.5)),
]
IDS = [c[0] for c in CONFIGS]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=2e-5, atol=2e-5)}


def _run(fn, case, grad_out, **kwargs):
    args = {k: (v.clone().requires_grad_() if k in GRAD_NAMES else v) for k, v in case.items()}
    out = fn(*(args[k] for k in NAMES), **kwargs)
    grads = torch.autograd.grad(out, [args[k] for k in GRAD_NAMES], grad_out)
    return out.detach(), dict(zip(GRAD_NAMES, grads))


def assert_matches_reference(case, **kwargs):
    dtype = case["value"].dtype
    ref_case = {k: (v.double() if v.is_floating_point() else v) for k, v in case.items()}
    out_shape = (
        case["value"].shape[0],
        case["sampling_locations"].shape[1],
        case["value"].shape[2] * case["value"].shape[3],
    )
    grad_out = torch.cos(torch.arange(torch.Size(out_shape).numel(), dtype=torch.float64) * 0.7).reshape(out_shape)
    out, grads = _run(detops_deform_attn.multi_scale_deformable_attention, case, grad_out.to(dtype), **kwargs)
    ref_out, ref_grads = _run(reference_msda, ref_case, grad_out)
    assert out.dtype == dtype and out.shape == out_shape
    torch.testing.assert_close(out.double(), ref_out, **TOL[dtype])
    for k in GRAD_NAMES:
        scale = max(1.0, ref_grads[k].abs().max().item())
        torch.testing.assert_close(
            grads[k].double() / scale, ref_grads[k] / scale, **TOL[dtype], msg=lambda m, k=k: f"grad {k}: {m}"
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_matches_reference(name, config, dtype):
    assert_matches_reference(make_case(dtype=dtype, **config))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_with_level_start_index(dtype):
    case = make_case(dtype=dtype, shapes=((4, 3), (2, 5), (3, 3)))
    assert_matches_reference(case, value_level_start_index=start_index(case["value_spatial_shapes"]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_locations_on_borders_and_outside(dtype):
    # Levels of power-of-two sizes and locations k / (2 * size): pixel coordinates k / 2 - 0.5
    # are exact in both formulas, landing on every integer and half-integer from -3 to
    # size + 2, so on -1, 0, size - 1 and size exactly (where neighbours enter and leave).
    shapes = ((4, 8), (2, 4), (1, 2))
    case = make_case(dtype=torch.float64, shapes=shapes, points=8, queries=12, heads=2)
    g = torch.Generator().manual_seed(3)
    loc = case["sampling_locations"]
    for level, (h, w) in enumerate(shapes):
        for axis, size in ((0, w), (1, h)):
            k = torch.randint(-5, 2 * size + 6, loc[:, :, :, level, :, axis].shape, generator=g)
            loc[:, :, :, level, :, axis] = k.double() / (2 * size)
    case = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in case.items()}
    assert_matches_reference(case)


CHECK_CONFIGS = [
    dict(batch=1, queries=3, heads=2, head_dim=2, shapes=((3, 4), (2, 2)), points=2),
    dict(batch=2, queries=2, heads=1, head_dim=3, shapes=((5, 3),), points=1, spread=0.5),
    dict(batch=1, queries=2, heads=2, head_dim=5, shapes=((2, 3), (1, 1), (3, 1)), points=3),
]


@pytest.mark.parametrize("config", CHECK_CONFIGS)
def test_gradcheck(config):
    case = make_case(dtype=torch.float64, **config)
    args = [case[k].clone().requires_grad_() if k in GRAD_NAMES else case[k] for k in NAMES]
    assert torch.autograd.gradcheck(detops_deform_attn.multi_scale_deformable_attention, args, eps=1e-6, atol=1e-7)


def test_only_requested_gradients():
    case = make_case()
    value = case["value"].clone().requires_grad_()
    out = detops_deform_attn.multi_scale_deformable_attention(
        value, case["value_spatial_shapes"], case["sampling_locations"], case["attention_weights"]
    )
    (grad,) = torch.autograd.grad(out.sum(), [value])
    ref_value = case["value"].clone().requires_grad_()
    ref = reference_msda(ref_value, case["value_spatial_shapes"], case["sampling_locations"], case["attention_weights"])
    (ref_grad,) = torch.autograd.grad(ref.sum(), [ref_value])
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-10)
