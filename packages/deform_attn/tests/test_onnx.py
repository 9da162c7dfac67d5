"""ONNX export of multi_scale_deformable_attention (the `onnx` extra) run in ONNX Runtime
against eager, with dynamic queries and values, and inside the module."""

import pytest
import torch
from deform_attn_reference import make_case

import detops_deform_attn
from detops_core.testing import onnx_session

NAMES = ("value", "value_spatial_shapes", "sampling_locations", "attention_weights")


def _table():
    pytest.importorskip("onnxscript", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")
    import detops_deform_attn.onnx

    return detops_deform_attn.onnx.translation_table()


class Attention(torch.nn.Module):
    def forward(self, value, value_spatial_shapes, sampling_locations, attention_weights):
        return detops_deform_attn.multi_scale_deformable_attention(
            value, value_spatial_shapes, sampling_locations, attention_weights
        )


def _args(dtype=torch.float32, **config):
    case = make_case(dtype=dtype, **config)
    return [case[k] for k in NAMES]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_onnx_matches_eager(dtype):
    table = _table()
    q, s = torch.export.Dim("queries"), torch.export.Dim("values")
    config = dict(shapes=((5, 7), (3, 4), (1, 2)), points=3, spread=0.3)
    run = onnx_session(Attention(), tuple(_args(dtype, **config)), table, dynamic_shapes=({1: s}, None, {1: q}, {1: q}))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    # Other query counts, level sizes and value counts than at export.
    for other in (config, dict(shapes=((4, 4), (2, 6), (3, 1)), points=3, queries=11, seed=2)):
        args = _args(dtype, **other)
        (got,) = run(*args)
        torch.testing.assert_close(torch.from_numpy(got), Attention()(*args), **tol)


def test_onnx_module():
    table = _table()
    torch.manual_seed(0)
    module = detops_deform_attn.MultiScaleDeformableAttention(embed_dim=16, num_heads=2, num_levels=2, num_points=2)
    g = torch.Generator().manual_seed(1)
    spatial = torch.tensor([[4, 5], [2, 3]])
    args = (
        torch.randn(1, 6, 16, generator=g),
        torch.rand(1, 6, 2, 2, generator=g),
        torch.randn(1, 26, 16, generator=g),
        spatial,
    )
    run = onnx_session(module, args, table)
    (got,) = run(*args)
    torch.testing.assert_close(torch.from_numpy(got), module(*args), rtol=1e-5, atol=1e-5)
