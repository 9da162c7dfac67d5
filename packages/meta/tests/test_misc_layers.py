"""detops.misc (FrozenBatchNorm2d, Conv2d/Conv3dNormActivation, SqueezeExcitation, MLP,
Permute) against torchvision 0.29: the same seed builds the same weights under the same
state_dict keys, forward results and gradients are bitwise equal in train and eval mode,
state_dicts load both ways, TorchScript and torch.fx give the eager results; and
FrozenBatchNorm2d against its definition."""

import copy
import functools
import warnings

import pytest
import torch
from layers_oracle import (
    FLOATS,
    assert_bitwise,
    assert_same_outcome,
    needs_torchvision,
    outcome,
    symbolic_traced_matches,
    tv,
)

import detops
from detops import misc


def _randn(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def _built(cls, args, kwargs, seed=0):
    torch.manual_seed(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = outcome(cls, *args, **kwargs)
    return made, [w.category for w in caught]


def _pair(name, args, kwargs, module="misc"):
    """detops' and torchvision's class `name` built with the same arguments after the same
    seed; asserts that both were built (or both raised the same exception type) and warned
    alike."""
    ours, our_warnings = _built(getattr(getattr(detops, module), name), args, kwargs)
    theirs, their_warnings = _built(getattr(getattr(tv, module), name), args, kwargs)
    assert our_warnings == their_warnings
    assert ours[0] == theirs[0], (ours, theirs)
    if ours[0] == "raised":
        assert ours[1] is theirs[1]
        return None, None
    return ours[1], theirs[1]


def _assert_same_state(ours, theirs):
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert_bitwise(a[key], b[key])


def _forward_backward(module, x, seed):
    leaf = x.clone().requires_grad_()
    torch.manual_seed(seed)
    out = module(leaf * 1.0)  # not the leaf itself: inplace activations may follow
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out, [leaf, *params], _randn(out.shape, out.dtype, seed=9), allow_unused=True)
    return out.detach(), grads


def _assert_same_run(ours, theirs, x, seed=0):
    """One forward and backward of each (same seed, same input): bitwise equal outputs,
    input and parameter gradients, and state afterwards (BatchNorm's running statistics);
    or the same exception type (an inplace activation before an inplace Dropout cannot be
    differentiated, in torchvision's MLP as in ours)."""
    results = [outcome(_forward_backward, module, x, seed) for module in (ours, theirs)]
    assert results[0][0] == results[1][0], results
    if results[0][0] == "raised":
        assert results[0][1] is results[1][1]
        return
    (out_ours, grads_ours), (out_theirs, grads_theirs) = results[0][1], results[1][1]
    assert_bitwise(out_ours, out_theirs)
    for g_ours, g_theirs in zip(grads_ours, grads_theirs):
        assert (g_ours is None) == (g_theirs is None)
        if g_ours is not None:
            assert_bitwise(g_ours, g_theirs)
    _assert_same_state(ours, theirs)


def _assert_script_and_trace(module, x):
    module = module.eval()  # deterministic, so that the three runs compare exactly
    eager = module(x.clone())
    torch.testing.assert_close(torch.jit.script(module)(x.clone()), eager, rtol=0, atol=0)
    symbolic_traced_matches(module, x)


# ---------------------------------------------------------------- FrozenBatchNorm2d


def _frozen(cls, channels=5, eps=1e-5, seed=0):
    bn = cls(channels, eps=eps)
    g = torch.Generator().manual_seed(seed)
    bn.weight.copy_(torch.randn(channels, generator=g))
    bn.bias.copy_(torch.randn(channels, generator=g))
    bn.running_mean.copy_(torch.randn(channels, generator=g))
    bn.running_var.copy_(torch.rand(channels, generator=g) + 0.1)
    return bn


def test_frozen_batch_norm_definition():
    bn = _frozen(detops.FrozenBatchNorm2d, eps=1e-3).double()
    x = _randn((2, 5, 3, 4), torch.float64)
    view = [1, -1, 1, 1]
    want = (x - bn.running_mean.view(view)) / torch.sqrt(bn.running_var.view(view) + 1e-3) * bn.weight.view(
        view
    ) + bn.bias.view(view)
    torch.testing.assert_close(bn(x), want, rtol=1e-12, atol=1e-12)
    assert [n for n, _ in bn.named_parameters()] == []  # frozen: buffers only
    assert sorted(n for n, _ in bn.named_buffers()) == ["bias", "running_mean", "running_var", "weight"]


@needs_torchvision
@pytest.mark.parametrize("module_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_frozen_batch_norm_matches_torchvision(module_dtype, dtype, eps):
    ours = _frozen(detops.FrozenBatchNorm2d, eps=eps).to(module_dtype)
    theirs = _frozen(tv.FrozenBatchNorm2d, eps=eps).to(module_dtype)
    _assert_same_run(ours, theirs, _randn((3, 5, 4, 6), dtype))
    assert repr(ours) == repr(theirs)


@needs_torchvision
def test_frozen_batch_norm_state_dicts():
    ours, theirs = _frozen(detops.FrozenBatchNorm2d, seed=1), _frozen(tv.FrozenBatchNorm2d, seed=2)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    _assert_same_state(ours, theirs)
    fresh = tv.FrozenBatchNorm2d(5)
    fresh.load_state_dict(_frozen(detops.FrozenBatchNorm2d, seed=3).state_dict())
    _assert_same_state(fresh, _frozen(detops.FrozenBatchNorm2d, seed=3))
    # a BatchNorm2d's state_dict (num_batches_tracked included) loads strictly into both
    bn = torch.nn.BatchNorm2d(5)
    bn(_randn((4, 5, 3, 3)))
    state = bn.state_dict()
    assert "num_batches_tracked" in state
    for cls in (detops.FrozenBatchNorm2d, tv.FrozenBatchNorm2d):
        frozen = cls(5)
        frozen.load_state_dict(state)
        assert torch.equal(frozen.running_mean, bn.running_mean)
    assert "num_batches_tracked" in state  # load_state_dict works on a copy
    # inside a bigger model, under a prefix; and a missing key still fails
    nested = torch.nn.Sequential(torch.nn.Identity(), detops.FrozenBatchNorm2d(5))
    nested.load_state_dict({"1." + k: v for k, v in state.items()})
    for cls in (detops.FrozenBatchNorm2d, tv.FrozenBatchNorm2d):
        partial = {k: v for k, v in state.items() if k != "running_var"}
        assert outcome(cls(5).load_state_dict, partial) == ("raised", RuntimeError)


@needs_torchvision
@pytest.mark.parametrize("shape", [(2, 4, 3, 3), (5, 3, 3), (2, 5, 3), (2, 5, 3, 3, 2), (0, 5, 2, 2)])
def test_frozen_batch_norm_unusual_input(shape):
    x = _randn(shape)
    assert_same_outcome(outcome(_frozen(detops.FrozenBatchNorm2d), x), outcome(_frozen(tv.FrozenBatchNorm2d), x))


def test_frozen_batch_norm_scripts_and_traces():
    _assert_script_and_trace(_frozen(detops.FrozenBatchNorm2d), _randn((2, 5, 3, 3)))


# ---------------------------------------------------------------- Conv*NormActivation

CONV2D_CASES = [
    {},
    dict(kernel_size=1),
    dict(kernel_size=(3, 5), dilation=2),
    dict(kernel_size=5, dilation=(1, 2)),
    dict(kernel_size=[3, 1], dilation=[2, 1]),
    dict(padding=0),
    dict(padding="same"),
    dict(padding=(2, 0), kernel_size=3),
    dict(stride=2, groups=2),
    dict(norm_layer=None),
    dict(activation_layer=None),
    dict(norm_layer=None, activation_layer=None, bias=False),
    dict(bias=True),
    dict(inplace=None),
    dict(inplace=False, activation_layer=torch.nn.Hardswish),
    dict(norm_layer=functools.partial(torch.nn.GroupNorm, 2)),
    dict(activation_layer=torch.nn.GELU, inplace=None),
    dict(activation_layer=torch.nn.GELU),  # GELU takes no inplace: both raise TypeError
    dict(groups=3),  # 4 channels in 3 groups: Conv2d's ValueError in both
]
CONV3D_CASES = [{}, dict(kernel_size=(1, 3, 3)), dict(norm_layer=None), dict(kernel_size=3, dilation=(1, 1, 2))]


def _conv_cases():
    for kwargs in CONV2D_CASES:
        yield "Conv2dNormActivation", kwargs, (2, 4, 7, 6)
    for kwargs in CONV3D_CASES:
        yield "Conv3dNormActivation", kwargs, (2, 4, 5, 6, 4)
    yield "ConvNormActivation", {}, (2, 4, 7, 6)  # the base: warns in both
    yield "ConvNormActivation", dict(conv_layer=torch.nn.Conv1d, norm_layer=torch.nn.BatchNorm1d), (2, 4, 9)


@needs_torchvision
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name, kwargs, shape", list(_conv_cases()))
def test_conv_norm_activation_matches_torchvision(name, kwargs, shape, dtype):
    ours, theirs = _pair(name, (4, 6), kwargs)
    if ours is None:
        return
    assert repr(ours) == repr(theirs) and ours.out_channels == theirs.out_channels == 6
    _assert_same_state(ours, theirs)  # same keys, same initial weights from the same seed
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    x = _randn(shape, dtype)
    for training in (True, False):
        ours.train(training), theirs.train(training)
        _assert_same_outcome_run(ours, theirs, x)


def _assert_same_outcome_run(ours, theirs, x):
    # narrow types: where torch has no CPU kernel for a layer, both must fail alike
    try:
        copy.deepcopy(ours)(x.clone())  # a copy: a run in training mode changes BatchNorm's statistics
    except Exception:
        assert_same_outcome(outcome(ours, x.clone()), outcome(theirs, x.clone()))
        return
    _assert_same_run(ours, theirs, x)


@needs_torchvision
@pytest.mark.parametrize("name, kwargs, shape", list(_conv_cases()))
def test_conv_norm_activation_state_dicts_load_both_ways(name, kwargs, shape):
    ours, theirs = _pair(name, (4, 6), kwargs)
    if ours is None:
        return
    source, _ = _pair(name, (4, 6), kwargs)
    torch.manual_seed(11)
    for t in source.state_dict().values():
        if t.is_floating_point():
            t.copy_(torch.randn_like(t))
    theirs.load_state_dict(source.state_dict())
    ours.load_state_dict(theirs.state_dict())
    _assert_same_state(ours, theirs)


BUILDABLE_CONV_CASES = [c for c in _conv_cases() if c[1] not in (dict(activation_layer=torch.nn.GELU), dict(groups=3))]


@pytest.mark.parametrize("name, kwargs, shape", BUILDABLE_CONV_CASES)
def test_conv_norm_activation_scripts_and_traces(name, kwargs, shape):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = getattr(misc, name)(4, 6, **kwargs)
    _assert_script_and_trace(module, _randn(shape))


def test_conv_norm_activation_default_padding():
    # "same" size at stride 1 for odd kernels: (kernel_size - 1) // 2 * dilation per side
    conv = detops.Conv2dNormActivation(3, 3, kernel_size=(5, 3), dilation=(1, 3))[0]
    assert conv.padding == (2, 3) and conv.kernel_size == (5, 3) and conv.bias is None
    assert detops.Conv3dNormActivation(3, 3, norm_layer=None)[0].bias is not None
    assert isinstance(detops.Conv3dNormActivation(3, 3)[1], torch.nn.BatchNorm3d)
    with pytest.warns(UserWarning, match="Conv2dNormActivation"):
        misc.ConvNormActivation(3, 3)


# ---------------------------------------------------------------- SqueezeExcitation

SE_CASES = [{}, dict(activation=torch.nn.SiLU), dict(scale_activation=torch.nn.Hardsigmoid)]


@needs_torchvision
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("kwargs", SE_CASES)
def test_squeeze_excitation_matches_torchvision(kwargs, dtype):
    ours, theirs = _pair("SqueezeExcitation", (6, 3), kwargs)
    assert repr(ours) == repr(theirs)
    _assert_same_state(ours, theirs)
    _assert_same_outcome_run(ours.to(dtype), theirs.to(dtype), _randn((2, 6, 5, 4), dtype))
    x = _randn((2, 6, 5, 4))
    assert_bitwise(ours.float()._scale(x), theirs.float()._scale(x))


def test_squeeze_excitation_definition_scripts_and_traces():
    se = detops.SqueezeExcitation(6, 3).double()
    x = _randn((2, 6, 5, 4), torch.float64)
    gate = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean(dim=(2, 3), keepdim=True)))))
    torch.testing.assert_close(se(x), gate * x, rtol=1e-12, atol=1e-12)
    _assert_script_and_trace(se, x)


# ---------------------------------------------------------------- MLP

MLP_CASES = [
    ([8, 3], {}),
    ([5], {}),
    ([8, 8, 3], dict(norm_layer=torch.nn.LayerNorm)),
    ([8, 3], dict(inplace=False)),
    ([8, 3], dict(inplace=True, dropout=0.3)),
    ([8, 3], dict(dropout=0.5)),
    ([8, 3], dict(bias=False, activation_layer=torch.nn.GELU)),
    ([3], dict(activation_layer=None)),
    ([8, 3], dict(activation_layer=None)),  # hidden layers need an activation: TypeError
    ([8, 3], dict(activation_layer=torch.nn.GELU, inplace=True)),  # GELU(inplace=...): TypeError
    ([], {}),  # no layers at all: IndexError in both
]


@needs_torchvision
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("hidden, kwargs", MLP_CASES)
def test_mlp_matches_torchvision(hidden, kwargs, dtype):
    ours, theirs = _pair("MLP", (4, hidden), kwargs)
    if ours is None:
        return
    assert repr(ours) == repr(theirs)
    _assert_same_state(ours, theirs)
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    for training in (True, False):  # in training, dropout draws the same under one seed
        ours.train(training), theirs.train(training)
        _assert_same_outcome_run(ours, theirs, _randn((6, 2, 4), dtype))


@pytest.mark.parametrize("hidden, kwargs", MLP_CASES[:8])
def test_mlp_scripts_and_traces(hidden, kwargs):
    _assert_script_and_trace(detops.MLP(4, hidden, **kwargs), _randn((6, 4)))


# ---------------------------------------------------------------- Permute


@pytest.mark.parametrize("dims", [[0, 2, 3, 1], [0, 3, 1, 2], [3, 2, 1, 0], [0, -1, 1, 2]])
def test_permute(dims):
    x = _randn((2, 3, 4, 5))
    out = detops.Permute(dims)(x)
    assert torch.equal(out, x.permute(dims)) and out.data_ptr() == x.data_ptr()  # a view
    _assert_script_and_trace(detops.Permute(dims), x)
    if tv is not None:
        assert repr(detops.Permute(dims)) == repr(tv.Permute(dims))
        assert detops.Permute(dims).state_dict() == tv.Permute(dims).state_dict() == {}


@needs_torchvision
@pytest.mark.parametrize("dims", [[0, 1, 2], [0, 0, 1, 2], [0, 1, 2, 4]])
def test_permute_bad_dims(dims):
    x = _randn((2, 3, 4, 5))
    assert_same_outcome(outcome(detops.Permute(dims), x), outcome(tv.Permute(dims), x))
    assert outcome(detops.Permute(dims), x)[0] == "raised"


def test_interpolate_is_torchs():
    assert misc.interpolate is torch.nn.functional.interpolate


# ---------------------------------------------------------------- deployment


def _deployable():
    yield _frozen(detops.FrozenBatchNorm2d), (2, 5, 6, 4)
    yield detops.Conv2dNormActivation(5, 6, stride=2), (2, 5, 6, 4)
    yield detops.Conv3dNormActivation(5, 6), (2, 5, 3, 6, 4)
    yield detops.SqueezeExcitation(5, 2), (2, 5, 6, 4)
    yield detops.MLP(4, [8, 3], norm_layer=torch.nn.LayerNorm, dropout=0.2), (2, 6, 4)
    yield detops.Permute([0, 2, 3, 1]), (2, 5, 6, 4)
    yield torch.nn.Sequential(detops.DropBlock2d(0.3, 3), detops.StochasticDepth(0.2, "row")), (2, 5, 6, 4)


@pytest.mark.parametrize("index", range(7))
def test_export_and_compile_in_eval_mode(index):
    module, shape = list(_deployable())[index]
    module = module.eval()
    x = _randn(shape)
    program = torch.export.export(module, (x,), strict=False)
    assert_bitwise(program.module()(x), module(x))
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), module(x), rtol=1e-6, atol=1e-6)
