"""drop_block2d / drop_block3d and their modules: against torchvision 0.29 (bitwise, the
same random draws under one seed) and against the definition (blocks around the drawn
centres, rescaled by numel / kept)."""

import itertools

import pytest
import torch
from layers_oracle import (
    FLOATS,
    assert_bitwise,
    assert_same_draws,
    assert_same_outcome,
    needs_torchvision,
    outcome,
    seeded,
    symbolic_traced_matches,
    tv,
)

import detops
from detops_core.testing import devices

FUNCTIONS = {2: detops.drop_block2d, 3: detops.drop_block3d}
MODULES = {2: detops.DropBlock2d, 3: detops.DropBlock3d}
SHAPES = {2: [(2, 3, 9, 9), (1, 2, 7, 12), (3, 1, 5, 4)], 3: [(2, 2, 5, 6, 7), (1, 3, 4, 5, 3)]}


def _input(shape, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)


def _reference(x, p, block_size, eps, dims, seed):
    """The definition: centres drawn (one bernoulli_ with the paper's gamma on the grid of
    centres whose block fits), each zeroing the block that reaches block_size - 1 back
    along every axis from it, the rest multiplied by numel / (eps + kept)."""
    spatial = list(x.shape[2:])
    block_size = min([block_size, *spatial])
    if block_size % 2 == 0:
        raise ValueError("even block")
    valid = [s - block_size + 1 for s in spatial]
    gamma = p
    for s in spatial:
        gamma *= s
    gamma /= block_size**dims * torch.tensor(valid).prod().item()
    torch.manual_seed(seed)
    centres = torch.empty([*x.shape[:2], *valid], dtype=x.dtype, device=x.device).bernoulli_(gamma)
    keep = torch.ones_like(x)
    for index in centres.nonzero().tolist():
        n, c, *at = index
        block = tuple(slice(a, a + block_size) for a in at)
        keep[(n, c, *block)] = 0
    return x * keep * (keep.numel() / (eps + keep.sum()))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("p", [0.1, 0.4, 1.0])
@pytest.mark.parametrize("block_size", [1, 3, 5])
def test_matches_definition(dims, p, block_size):
    for shape in SHAPES[dims]:
        x = _input(shape, torch.float64)
        got = seeded(7, FUNCTIONS[dims], x, p, block_size)[0]
        want = outcome(_reference, x, p, block_size, 1e-6, dims, 7)
        assert got[0] == want[0]
        if got[0] == "ok":
            torch.testing.assert_close(got[1], want[1], rtol=1e-12, atol=0)


@needs_torchvision
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("device", devices())
def test_same_draws_and_results_as_torchvision(dims, dtype, device):
    theirs_fn = {2: tv.drop_block2d, 3: tv.drop_block3d}[dims]
    for shape, p, block_size, eps, seed in itertools.product(
        SHAPES[dims], [0.0, 0.05, 0.3, 0.7, 1.0], [1, 3, 5, 7, 2], [1e-6, 0.5], [0, 1]
    ):
        x = _input(shape, dtype, device)
        ours = seeded(seed, FUNCTIONS[dims], x, p, block_size, eps=eps)
        theirs = seeded(seed, theirs_fn, x, p, block_size, eps=eps)
        assert_same_draws(ours, theirs)


@needs_torchvision
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("inplace", [False, True])
def test_gradients_match_torchvision(dims, dtype, inplace):
    theirs_fn = {2: tv.drop_block2d, 3: tv.drop_block3d}[dims]
    grads = []
    for fn in (FUNCTIONS[dims], theirs_fn):
        leaf = _input(SHAPES[dims][0], dtype).requires_grad_()
        torch.manual_seed(3)
        out = fn(leaf * 1.0 if inplace else leaf, 0.3, 3, inplace=inplace)
        (grad,) = torch.autograd.grad(out, leaf, _input(out.shape, dtype, seed=5))
        grads.append((out.detach(), grad))
    assert_bitwise(grads[0][0], grads[1][0])
    assert_bitwise(grads[0][1], grads[1][1])


@pytest.mark.parametrize("dims", [2, 3])
def test_inplace_modifies_the_input(dims):
    x = _input(SHAPES[dims][0])
    torch.manual_seed(0)
    want = FUNCTIONS[dims](x, 0.5, 3)
    torch.manual_seed(0)
    got = FUNCTIONS[dims](x, 0.5, 3, inplace=True)
    assert got.data_ptr() == x.data_ptr()
    assert_bitwise(x, want)


@pytest.mark.parametrize("dims", [2, 3])
def test_identity_outside_training_or_at_p_0(dims):
    x = _input(SHAPES[dims][0])
    before = torch.get_rng_state()
    assert FUNCTIONS[dims](x, 0.5, 3, training=False) is x
    assert FUNCTIONS[dims](x, 0.0, 3) is x
    assert torch.equal(torch.get_rng_state(), before)  # no draw
    module = MODULES[dims](0.5, 3).eval()
    assert module(x) is x


@pytest.mark.parametrize("dims", [2, 3])
def test_p_1_drops_every_block(dims):
    # block_size 1: gamma = 1, every element is a centre: all zeros (scaled by numel / eps).
    # (gamma = p * prod(S) / (b^d * prod(S - b + 1)) <= p for 1 <= b <= S, as
    # b * (S - b + 1) - S = (b - 1) * (S - b) >= 0: p = 1 never asks bernoulli_ for more.)
    x = _input(SHAPES[dims][0])
    assert torch.equal(FUNCTIONS[dims](x, 1.0, 1), torch.zeros_like(x))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(
    "args",
    [
        dict(p=-0.1, block_size=3),
        dict(p=1.5, block_size=3),
        dict(p=0.5, block_size=4),
        dict(p=0.5, block_size=0),
        dict(p=0.5, block_size=-1),
        dict(p=0.5, block_size=-2),
    ],
)
def test_bad_arguments(dims, args):
    x = _input(SHAPES[dims][0])
    with pytest.raises((ValueError, RuntimeError)):
        FUNCTIONS[dims](x, **args)
    if tv is not None:
        theirs_fn = {2: tv.drop_block2d, 3: tv.drop_block3d}[dims]
        assert_same_outcome(outcome(FUNCTIONS[dims], x, **args), outcome(theirs_fn, x, **args))


@needs_torchvision
@pytest.mark.parametrize("dims", [2, 3])
def test_unusual_input(dims):
    shape = SHAPES[dims][0]
    theirs_fn = {2: tv.drop_block2d, 3: tv.drop_block3d}[dims]
    for x in (
        torch.arange(torch.Size(shape).numel()).reshape(shape),  # integers: no max pooling for them
        torch.zeros((0, *shape[1:])),  # no samples
        torch.full(shape, float("nan")),
        torch.ones((2, 3) + (1,) * dims),  # one element per channel: block_size clamped to 1
    ):
        assert_same_draws(seeded(0, FUNCTIONS[dims], x, 0.5, 3), seeded(0, theirs_fn, x, 0.5, 3))


@pytest.mark.parametrize("dims", [2, 3])
def test_wrong_number_of_dimensions(dims):
    for x in (torch.ones(3, 4, 4), torch.ones([2] * (dims + 3))):
        with pytest.raises(ValueError, match="dimensions"):
            FUNCTIONS[dims](x, 0.5, 3)
        with pytest.raises(ValueError, match="dimensions"):
            FUNCTIONS[dims](x, 0.5, 3, training=False)  # checked before the early return


@pytest.mark.parametrize("dims", [2, 3])
def test_module(dims):
    ours = MODULES[dims](0.3, 3, inplace=False, eps=1e-3)
    x = _input(SHAPES[dims][0])
    torch.manual_seed(2)
    got = ours(x)
    torch.manual_seed(2)
    assert_bitwise(got, FUNCTIONS[dims](x, 0.3, 3, False, 1e-3))
    assert ours.state_dict() == {} and isinstance(ours, detops.DropBlock2d)
    if tv is not None:
        theirs = {2: tv.DropBlock2d, 3: tv.DropBlock3d}[dims](0.3, 3, inplace=False, eps=1e-3)
        assert repr(ours) == repr(theirs)
        assert_same_draws(seeded(4, ours, x), seeded(4, theirs, x))


@pytest.mark.parametrize("dims", [2, 3])
def test_scripts(dims):
    x = _input(SHAPES[dims][0])
    scripted_fn = torch.jit.script(FUNCTIONS[dims])
    scripted = torch.jit.script(MODULES[dims](0.3, 3))
    torch.manual_seed(1)
    eager = FUNCTIONS[dims](x, 0.3, 3)
    for run in (lambda: scripted_fn(x, 0.3, 3), lambda: scripted(x)):
        torch.manual_seed(1)
        # TorchScript divides a number by a tensor its own way: equal to rounding
        torch.testing.assert_close(run(), eager, rtol=1e-6, atol=0)
    # (torchvision's drop_block2d/3d do not script: nothing to compare with there)


@pytest.mark.parametrize("dims", [2, 3])
def test_symbolic_trace(dims):
    x = _input(SHAPES[dims][0])
    traced = symbolic_traced_matches(MODULES[dims](0.3, 3), x)
    # a leaf call, as in torchvision (its checks read the input's dimensions)
    assert [n.target for n in traced.graph.nodes if n.op == "call_function"] == [FUNCTIONS[dims]]
