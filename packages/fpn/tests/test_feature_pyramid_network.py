"""FeaturePyramidNetwork and extra blocks: torchvision's results and state_dict layout."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

import detops_fpn
from detops_core.testing import assert_scripts, devices, full_float32, torchvision_ops

tv_ops = torchvision_ops() and torchvision_ops().feature_pyramid_network

IN_CHANNELS = [8, 16, 24, 32]


def _features(size, seed=0, batch=2, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    maps = OrderedDict()
    for i, c in enumerate(IN_CHANNELS):
        s = 2 ** (i + 2)
        maps[f"c{i + 2}"] = torch.randn(batch, c, -(-h // s), -(-w // s), generator=g).to(device)
    return maps


def _reference_fpn(fpn, features):
    """The FPN computed from its own parameters with plain torch ops (the definition)."""
    names, xs = list(features), list(features.values())
    inner = [blk(x) for blk, x in zip(fpn.inner_blocks, xs)]
    last = inner[-1]
    outs = [fpn.layer_blocks[-1](last)]
    for i in range(len(xs) - 2, -1, -1):
        last = inner[i] + nn.functional.interpolate(last, size=inner[i].shape[-2:], mode="nearest")
        outs.insert(0, fpn.layer_blocks[i](last))
    if fpn.extra_blocks is not None:
        outs, names = fpn.extra_blocks(outs, xs, names)
    return OrderedDict(zip(names, outs))


def _extra(kind):
    if kind == "maxpool":
        return detops_fpn.LastLevelMaxPool(), (tv_ops.LastLevelMaxPool() if tv_ops else None)
    if kind == "p6p7":
        return detops_fpn.LastLevelP6P7(32, 16), (tv_ops.LastLevelP6P7(32, 16) if tv_ops else None)
    if kind == "p6p7_from_p5":
        return detops_fpn.LastLevelP6P7(16, 16), (tv_ops.LastLevelP6P7(16, 16) if tv_ops else None)
    return None, None


def _assert_same(a, b, atol=1e-5):
    assert list(a) == list(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=atol)


@pytest.mark.parametrize("extra", [None, "maxpool", "p6p7", "p6p7_from_p5"])
@pytest.mark.parametrize("norm", [None, "batchnorm"])
@pytest.mark.parametrize("size", [(64, 64), (100, 76), (37, 53)])
@pytest.mark.parametrize("device", devices())
def test_matches_definition_and_torchvision(extra, norm, size, device):
    norm_layer = nn.BatchNorm2d if norm else None
    ours_extra, tv_extra = _extra(extra)
    torch.manual_seed(0)
    fpn = detops_fpn.FeaturePyramidNetwork(IN_CHANNELS, 16, extra_blocks=ours_extra, norm_layer=norm_layer)
    fpn = fpn.eval().to(device)
    feats = _features(size, device=device)
    got = fpn(feats)
    assert all(v.device == feats["c2"].device for v in got.values())
    _assert_same(got, _reference_fpn(fpn, feats))
    if tv_ops is not None:
        theirs = tv_ops.FeaturePyramidNetwork(IN_CHANNELS, 16, extra_blocks=tv_extra, norm_layer=norm_layer)
        theirs = theirs.eval().to(device)
        assert list(theirs.state_dict()) == list(fpn.state_dict())
        theirs.load_state_dict(fpn.state_dict())
        _assert_same(got, theirs(feats))


@pytest.mark.parametrize("device", devices())
def test_backward_matches_torchvision_or_definition(device):
    torch.manual_seed(1)
    fpn = detops_fpn.FeaturePyramidNetwork(IN_CHANNELS, 16, extra_blocks=detops_fpn.LastLevelMaxPool()).to(device)
    feats = OrderedDict((k, v.requires_grad_()) for k, v in _features((64, 96), seed=3, device=device).items())
    twin = detops_fpn.FeaturePyramidNetwork(IN_CHANNELS, 16, extra_blocks=detops_fpn.LastLevelMaxPool())
    if tv_ops is not None:
        twin = tv_ops.FeaturePyramidNetwork(IN_CHANNELS, 16, extra_blocks=tv_ops.LastLevelMaxPool())
    twin = twin.to(device)
    twin.load_state_dict(fpn.state_dict())
    weights = {k: torch.randn(v.shape).to(device) for k, v in fpn(feats).items()}

    def loss(out):
        return sum((out[k] * weights[k]).sum() for k in out)

    # Float32 throughout: with TF32, the two top-down steps' last-bit differences would
    # reach the weight gradients as 1e-3 ones.
    with full_float32():
        ours = torch.autograd.grad(loss(fpn(feats)), [*feats.values(), *fpn.parameters()])
        ref_out = _reference_fpn(twin, feats) if tv_ops is None else twin(feats)
        theirs = torch.autograd.grad(loss(ref_out), [*feats.values(), *twin.parameters()])
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_initialisation_and_state_dict_keys():
    torch.manual_seed(0)
    fpn = detops_fpn.FeaturePyramidNetwork([4, 8], 6, norm_layer=nn.BatchNorm2d)
    keys = list(fpn.state_dict())
    assert keys[:2] == ["inner_blocks.0.0.weight", "inner_blocks.0.1.weight"]
    assert all(m.bias is None for m in fpn.modules() if isinstance(m, nn.Conv2d))
    plain = detops_fpn.FeaturePyramidNetwork([4, 8], 6)
    for m in plain.modules():
        if isinstance(m, nn.Conv2d):
            assert torch.all(m.bias == 0)
            bound = (6 / ((1 + 1) * m.weight[0].numel())) ** 0.5  # kaiming_uniform_ with a=1
            assert m.weight.abs().max() <= bound
    if tv_ops is not None:
        assert list(tv_ops.FeaturePyramidNetwork([4, 8], 6, norm_layer=nn.BatchNorm2d).state_dict()) == keys


def test_loads_version_1_checkpoints():
    fpn = detops_fpn.FeaturePyramidNetwork([4, 8], 6)
    old = {k.replace(".0.weight", ".weight").replace(".0.bias", ".bias"): v for k, v in fpn.state_dict().items()}
    fresh = detops_fpn.FeaturePyramidNetwork([4, 8], 6)
    fresh.load_state_dict(old)
    for k, v in fpn.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_bad_arguments():
    with pytest.raises(ValueError, match="in_channels=0"):
        detops_fpn.FeaturePyramidNetwork([0, 4], 4)
    with pytest.raises(TypeError, match="ExtraFPNBlock"):
        detops_fpn.FeaturePyramidNetwork([4], 4, extra_blocks=nn.Identity())


@pytest.mark.parametrize("extra", [None, "maxpool", "p6p7"])
@pytest.mark.parametrize("device", devices())
def test_torchscript(extra, device):
    fpn = detops_fpn.FeaturePyramidNetwork(IN_CHANNELS, 16, extra_blocks=_extra(extra)[0]).eval().to(device)
    assert_scripts(fpn, (_features((64, 64), device=device),))


# torch 2.13's inductor (CPU) computes wrong FPN weight gradients even with the plain
# F.interpolate + add top-down step, no detops op involved (fixed in 2.14); there the
# gradient check compiles with aot_eager, which still traces our fake kernels and autograd.
_BACKWARD_BACKEND = "inductor" if torch.__version__ >= (2, 14) else "aot_eager"


# Float32 throughout: TF32 convolutions of other algorithms (compiled vs eager) differ by 1e-3.
@full_float32()
@pytest.mark.parametrize("device", devices())
def test_compile_fullgraph_forward_and_backward(device):
    torch.manual_seed(2)
    fpn = detops_fpn.FeaturePyramidNetwork(IN_CHANNELS, 16, extra_blocks=detops_fpn.LastLevelMaxPool()).to(device)
    feats = _features((64, 64), seed=5, device=device)
    _assert_same(torch.compile(fpn, fullgraph=True)(feats), fpn(feats), atol=1e-4)
    compiled = torch.compile(fpn, fullgraph=True, backend=_BACKWARD_BACKEND)
    feats = _features((64, 64), seed=5, device=device)
    eager = fpn(feats)
    got = compiled(feats)
    _assert_same(got, eager, atol=1e-4)
    sum(v.sum() for v in got.values()).backward()
    grads = [p.grad.clone() for p in fpn.parameters()]
    fpn.zero_grad()
    sum(v.sum() for v in eager.values()).backward()
    for a, p in zip(grads, fpn.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("extra", ["maxpool", "p6p7"])
@pytest.mark.parametrize("device", devices())
def test_torchvision_checkpoint_loads_unchanged(extra, device):
    if tv_ops is None:  # compat: no torchvision checkpoint to load; the definition test covers values
        theirs_state = detops_fpn.FeaturePyramidNetwork(IN_CHANNELS, 16, extra_blocks=_extra(extra)[0]).state_dict()
    else:
        torch.manual_seed(7)
        theirs = tv_ops.FeaturePyramidNetwork(IN_CHANNELS, 16, extra_blocks=_extra(extra)[1]).eval().to(device)
        theirs_state = theirs.state_dict()
    ours = detops_fpn.FeaturePyramidNetwork(IN_CHANNELS, 16, extra_blocks=_extra(extra)[0]).eval().to(device)
    ours.load_state_dict(theirs_state)  # strict: same keys, same shapes
    feats = _features((96, 64), seed=8, device=device)
    if tv_ops is not None:
        _assert_same(ours(feats), theirs(feats))
    _assert_same(ours(feats), _reference_fpn(ours, feats))
