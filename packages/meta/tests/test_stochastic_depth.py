"""stochastic_depth and StochasticDepth: against torchvision 0.29 (bitwise, the same random
draws under one seed) and against the definition (each row or the whole batch either zero
or divided by 1 - p)."""

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

SHAPES = [(8, 3, 4, 4), (5, 7), (6,), (4, 2, 3, 2, 2)]


def _input(shape, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) + 0.5).to(device, dtype)


@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_matches_definition(mode, p):
    for shape in SHAPES:
        x = _input((64, *shape[1:]), torch.float64)  # positive: a zero output means dropped
        torch.manual_seed(3)
        out = detops.stochastic_depth(x, p, mode)
        # the draw, as defined: one Bernoulli(1 - p) per row (row) or for all (batch)
        torch.manual_seed(3)
        kept_shape = [x.shape[0] if mode == "row" else 1] + [1] * (x.dim() - 1)
        kept = torch.empty(kept_shape, dtype=x.dtype).bernoulli_(1 - p)
        assert torch.equal(out, x * (kept / (1 - p)))
        rows = out.reshape(out.shape[0], -1)
        dropped = (rows == 0).all(dim=1)
        torch.testing.assert_close(rows[~dropped], (x.reshape(x.shape[0], -1) / (1 - p))[~dropped], rtol=1e-15, atol=0)
        if mode == "batch":
            assert dropped.all() or not dropped.any()


@needs_torchvision
@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("device", devices())
def test_same_draws_and_results_as_torchvision(mode, dtype, device):
    for shape, p, training, seed in itertools.product(SHAPES, [0.0, 0.1, 0.5, 0.999, 1.0], [True, False], [0, 1, 2]):
        x = _input(shape, dtype, device)
        ours = seeded(seed, detops.stochastic_depth, x, p, mode, training)
        theirs = seeded(seed, tv.stochastic_depth, x, p, mode, training)
        assert_same_draws(ours, theirs)


@needs_torchvision
@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_gradients_match_torchvision(mode, dtype):
    results = []
    for fn in (detops.stochastic_depth, tv.stochastic_depth):
        leaf = _input((16, 3, 2), dtype).requires_grad_()
        torch.manual_seed(5)
        out = fn(leaf, 0.4, mode)
        (grad,) = torch.autograd.grad(out, leaf, torch.ones_like(out))
        results.append((out.detach(), grad))
    assert_bitwise(results[0][0], results[1][0])
    assert_bitwise(results[0][1], results[1][1])


def test_identity_outside_training_or_at_p_0():
    x = _input((4, 3))
    before = torch.get_rng_state()
    assert detops.stochastic_depth(x, 0.5, "row", training=False) is x
    assert detops.stochastic_depth(x, 0.0, "batch") is x
    assert torch.equal(torch.get_rng_state(), before)
    assert detops.StochasticDepth(0.5, "row").eval()(x) is x


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_p_1_zeroes(mode):
    x = _input((6, 5))
    assert torch.equal(detops.stochastic_depth(x, 1.0, mode), torch.zeros_like(x))


@pytest.mark.parametrize(
    "args",
    [(-0.1, "row"), (1.01, "batch"), (0.5, "col"), (0.5, "Row"), (2.0, "col"), (0.5, "row", False), (0.5, "x", False)],
)
def test_bad_arguments(args):
    x = _input((4, 3))
    if args[1] in ("row", "batch") and 0 <= args[0] <= 1:
        assert detops.stochastic_depth(x, *args) is x
    else:
        with pytest.raises(ValueError):
            detops.stochastic_depth(x, *args)
    if tv is not None:
        assert_same_outcome(outcome(detops.stochastic_depth, x, *args), outcome(tv.stochastic_depth, x, *args))


@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("x", [torch.tensor(2.0), torch.arange(6).reshape(3, 2), torch.ones(0, 3)], ids=str)
def test_unusual_input(mode, x):
    # a 0-d tensor has no rows; integer tensors cannot be divided in place by 1 - p; no rows
    ours = seeded(0, detops.stochastic_depth, x, 0.5, mode)
    if tv is not None:
        assert_same_draws(ours, seeded(0, tv.stochastic_depth, x, 0.5, mode))


def test_module():
    ours = detops.StochasticDepth(0.25, "row")
    x = _input((8, 3, 2))
    assert_same_draws(seeded(1, ours, x), seeded(1, detops.stochastic_depth, x, 0.25, "row"))
    assert ours.state_dict() == {}
    if tv is not None:
        theirs = tv.StochasticDepth(0.25, "row")
        assert repr(ours) == repr(theirs)
        assert_same_draws(seeded(2, ours, x), seeded(2, theirs, x))


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_scripts(mode):
    x = _input((8, 3, 2))
    scripted_fn = torch.jit.script(detops.stochastic_depth)
    scripted = torch.jit.script(detops.StochasticDepth(0.3, mode))
    eager = seeded(1, detops.stochastic_depth, x, 0.3, mode)
    assert_same_draws(seeded(1, scripted_fn, x, 0.3, mode), eager)
    assert_same_draws(seeded(1, scripted, x), eager)
    if tv is not None:
        theirs = torch.jit.script(tv.stochastic_depth)
        assert_same_draws(seeded(1, scripted_fn, x, 0.3, mode), seeded(1, theirs, x, 0.3, mode))


def test_symbolic_trace():
    traced = symbolic_traced_matches(detops.StochasticDepth(0.3, "row"), _input((8, 3)))
    assert [n.target for n in traced.graph.nodes if n.op == "call_function"] == [detops.stochastic_depth]
