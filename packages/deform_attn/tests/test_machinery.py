"""The op and the module in torch's machinery: opcheck, torch.compile(fullgraph=True)
forward and backward, torch.export with dynamic query and value counts, TorchScript,
autocast (float16/bfloat16 computed in float32) and the narrow dtypes."""

import pytest
import torch
from deform_attn_reference import make_case, reference_msda, start_index

import detops_deform_attn
from detops_core.testing import (
    assert_autocast_float32,
    assert_compiles,
    assert_exports,
    assert_opcheck,
    assert_scripts,
    devices,
)

OP = torch.ops.detops.multi_scale_deformable_attention
NAMES = ("value", "value_spatial_shapes", "sampling_locations", "attention_weights")


def _args(grad=False, dtype=torch.float32, **config):
    case = make_case(dtype=dtype, **config)
    return [case[k].requires_grad_(grad and k != "value_spatial_shapes") for k in NAMES]


@pytest.mark.parametrize("with_index", [False, True])
def test_opcheck(with_index):
    args = _args(grad=True, dtype=torch.float64)
    assert_opcheck(OP.default, [*args, start_index(args[1]) if with_index else None])


def test_opcheck_backward_op():
    args = _args(dtype=torch.float64)
    grad = torch.randn(2, 5, 6, dtype=torch.float64)
    op = torch.ops.detops._multi_scale_deformable_attention_backward.default
    assert_opcheck(op, [grad, *args, None, True, True])


def test_compiles_forward_and_backward():
    assert_compiles(detops_deform_attn.multi_scale_deformable_attention, _args(grad=True), backward=True)


def test_compiles_dynamic():
    fn = detops_deform_attn.multi_scale_deformable_attention
    compiled = assert_compiles(fn, _args(queries=5), dynamic=True)
    other = _args(queries=9, shapes=((4, 5), (3, 4)))  # other Q and S, same compiled graph
    torch.testing.assert_close(compiled(*other), fn(*other), rtol=0, atol=0)


class Attention(torch.nn.Module):
    # Named arguments: torch.export matches dynamic_shapes to forward's parameters.
    def forward(self, value, value_spatial_shapes, sampling_locations, attention_weights):
        return detops_deform_attn.multi_scale_deformable_attention(
            value, value_spatial_shapes, sampling_locations, attention_weights
        )


def test_exports_with_dynamic_queries_and_values():
    q, s = torch.export.Dim("queries"), torch.export.Dim("values")
    dynamic = ({1: s}, None, {1: q}, {1: q})
    more = [_args(queries=7, shapes=((4, 5), (3, 4))), _args(queries=1, shapes=((2, 2), (1, 3)))]
    assert_exports(Attention(), _args(), dynamic_shapes=dynamic, more_args=more)


def test_module_exports_with_dynamic_queries():
    torch.manual_seed(0)
    module = detops_deform_attn.MultiScaleDeformableAttention(embed_dim=16, num_heads=2, num_levels=2, num_points=3)
    args = _module_args(queries=6)
    q, s = torch.export.Dim("queries"), torch.export.Dim("values")
    dynamic = ({1: q}, {1: q}, {1: s}, None)
    assert_exports(module, args, dynamic_shapes=dynamic, more_args=[_module_args(queries=3, shapes=((3, 3), (2, 1)))])


def test_scripts_function():
    args = _args()
    assert_scripts(detops_deform_attn.multi_scale_deformable_attention, args)
    scripted = torch.jit.script(detops_deform_attn.multi_scale_deformable_attention)
    torch.testing.assert_close(scripted(*args, start_index(args[1])), OP(*args), rtol=0, atol=0)


def _module_args(queries=4, shapes=((4, 5), (3, 3)), batch=2, embed=16, dtype=torch.float32):
    g = torch.Generator().manual_seed(queries)
    spatial = torch.tensor(shapes)
    total = int((spatial[:, 0] * spatial[:, 1]).sum())
    query = torch.randn(batch, queries, embed, generator=g, dtype=dtype)
    ref = torch.rand(batch, queries, len(shapes), 2, generator=g, dtype=dtype)
    value = torch.randn(batch, total, embed, generator=g, dtype=dtype)
    return [query, ref, value, spatial]


def test_scripts_module():
    module = detops_deform_attn.MultiScaleDeformableAttention(embed_dim=16, num_heads=2, num_levels=2, num_points=3)
    assert_scripts(module, _module_args())


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_autocast(device, dtype):
    args = [a.to(device) for a in _args()]
    assert_autocast_float32(detops_deform_attn.multi_scale_deformable_attention, args, device, dtype)
    with torch.autocast(device, dtype=dtype):
        mixed = [args[0].to(dtype), args[1], args[2], args[3].to(dtype)]  # locations stay float32
        out = detops_deform_attn.multi_scale_deformable_attention(*mixed)
    assert out.dtype == dtype


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_narrow_dtypes_computed_in_float32(device, dtype):
    # The narrow values, computed exactly in float32, rounded once: within one unit in the
    # last place of the result, forward and gradients.
    case = make_case(dtype=dtype, queries=7, heads=3, head_dim=5, shapes=((5, 6), (2, 3)))
    leaves = [case[k].to(device).requires_grad_(k != "value_spatial_shapes") for k in NAMES]
    wide = [t.detach().float().requires_grad_() if t.requires_grad else t for t in leaves]
    out = detops_deform_attn.multi_scale_deformable_attention(*leaves)
    ref = reference_msda(*[t.cpu() for t in wide])
    assert out.dtype == dtype
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.float().cpu(), ref.detach(), rtol=eps, atol=eps)
    grad = torch.randn(out.shape).to(dtype)
    got = torch.autograd.grad(out, [leaves[0], leaves[2], leaves[3]], grad.to(device))
    expected = torch.autograd.grad(ref, [wide[0], wide[2], wide[3]], grad.float())
    for name, a, e in zip(("value", "sampling_locations", "attention_weights"), got, expected):
        scale = max(1.0, e.abs().max().item())
        torch.testing.assert_close(a.float().cpu() / scale, e / scale, rtol=2 * eps, atol=2 * eps, msg=name)


def test_module_matches_reference_composition():
    torch.manual_seed(0)
    module = detops_deform_attn.MultiScaleDeformableAttention(embed_dim=16, num_heads=2, num_levels=2, num_points=3)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # beyond the initialisation's zeros
    query, ref, value, spatial = _module_args(dtype=torch.float32)
    mask = torch.zeros(value.shape[:2], dtype=torch.bool)
    mask[1, -5:] = True
    out = module(query, ref, value, spatial, None, mask)
    # The same projections by hand, the reference op in the middle.
    b, q, _ = query.shape
    v = module.value_proj(value).masked_fill(mask[..., None], 0).view(b, -1, 2, 8)
    offsets = module.sampling_offsets(query).view(b, q, 2, 2, 3, 2)
    weights = module.attention_weights(query).view(b, q, 2, 6).softmax(-1).view(b, q, 2, 2, 3)
    normaliser = torch.stack([spatial[:, 1], spatial[:, 0]], -1).float()
    loc = ref[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
    expected = module.output_proj(reference_msda(v, spatial, loc, weights))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    boxes = torch.cat([ref, torch.rand(ref.shape, generator=torch.Generator().manual_seed(1))], -1)
    loc4 = boxes[:, :, None, :, None, :2] + offsets / 3 * boxes[:, :, None, :, None, 2:] * 0.5
    expected4 = module.output_proj(reference_msda(v, spatial, loc4, weights))
    torch.testing.assert_close(module(query, boxes, value, spatial, None, mask), expected4, rtol=1e-5, atol=1e-5)


def test_module_initialisation_and_arguments():
    module = detops_deform_attn.MultiScaleDeformableAttention()
    assert (module.embed_dim, module.num_heads, module.num_levels, module.num_points) == (256, 8, 4, 4)
    assert module.sampling_offsets.out_features == 8 * 4 * 4 * 2
    assert (module.sampling_offsets.weight == 0).all() and (module.attention_weights.weight == 0).all()
    bias = module.sampling_offsets.bias.view(8, 4, 4, 2)
    # Head 0 points along +x, head 2 along +y; point p at (p + 1) pixels, every level alike.
    torch.testing.assert_close(bias[0, 1, :, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(bias[2, 3, :, 1], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert bias.abs().amax(-1).sub(torch.arange(1, 5.0)).abs().max() < 1e-6
    with pytest.raises(ValueError, match="embed_dim .* divisible by num_heads"):
        detops_deform_attn.MultiScaleDeformableAttention(embed_dim=10, num_heads=3)
    with pytest.raises(ValueError, match="num_points must be a positive integer"):
        detops_deform_attn.MultiScaleDeformableAttention(num_points=0)
    small = detops_deform_attn.MultiScaleDeformableAttention(embed_dim=16, num_heads=2, num_levels=2, num_points=3)
    query, ref, value, spatial = _module_args()
    with pytest.raises(ValueError, match="reference_points must end in 2"):
        small(query, ref[..., :1], value, spatial)
    with pytest.raises(ValueError, match="value_spatial_shapes has 1 levels"):
        small(query, ref, value[:, :20], spatial[:1])
