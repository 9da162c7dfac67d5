"""What the tests of the plain-PyTorch layers (misc, drop_block, stochastic_depth) share:
torchvision 0.29's ops as the oracle, and comparisons that demand identical behaviour
(bitwise equal results, or the same exception type)."""

import pytest
import torch

from detops_core.testing import torchvision_ops

# 0.29 exactly is the contract; older torchvision (the compat-2.11 environment's 0.26) differs.
tv = torchvision_ops((0, 29))
needs_torchvision = pytest.mark.skipif(tv is None, reason="torchvision 0.29 (the oracle) is not installed here")

NARROW = [torch.float16, torch.bfloat16]
FLOATS = [torch.float32, torch.float64, *NARROW]


def outcome(fn, *args, **kwargs):
    """("ok", result) or ("raised", exception type), for comparing two implementations."""
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - the type is what is compared
        return "raised", type(error)


def assert_same_outcome(ours, theirs):
    """Both raised the same exception type, or both returned bitwise equal tensors (NaN
    where NaN), of the same dtype and shape."""
    assert ours[0] == theirs[0], (ours, theirs)
    if ours[0] == "raised":
        assert ours[1] is theirs[1], (ours[1], theirs[1])
    else:
        assert_bitwise(ours[1], theirs[1])


def assert_bitwise(a, b):
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
    assert torch.equal(a.isnan(), b.isnan()) if a.is_floating_point() else True
    assert torch.equal(torch.nan_to_num(a, 0.0), torch.nan_to_num(b, 0.0)), (a - b).abs().max()


def seeded(seed, fn, *args, **kwargs):
    """fn's outcome after torch.manual_seed(seed), and the CPU (and CUDA) random state it
    left: equal states mean the same number of random draws were taken."""
    torch.manual_seed(seed)
    result = outcome(fn, *args, **kwargs)
    states = [torch.get_rng_state()]
    if torch.cuda.is_available():
        states.append(torch.cuda.get_rng_state())
    return result, states


def assert_same_draws(ours, theirs):
    (our_result, our_states), (their_result, their_states) = ours, theirs
    assert_same_outcome(our_result, their_result)
    for a, b in zip(our_states, their_states):
        assert torch.equal(a, b), "a different sequence of random draws"


def symbolic_traced_matches(module, *inputs, seed=0):
    """torch.fx.symbolic_trace(module) gives the eager module's outputs (under one seed)."""
    traced = torch.fx.symbolic_trace(module)
    torch.manual_seed(seed)
    eager = module(*[x.clone() for x in inputs])
    torch.manual_seed(seed)
    assert_bitwise(traced(*[x.clone() for x in inputs]), eager)
    return traced
