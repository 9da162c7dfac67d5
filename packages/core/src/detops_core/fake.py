"""What every fake kernel shares. A fake kernel only infers the shapes of an op's results
(torch.compile and torch.export trace with it); the native entry point owns the op's
contract and reports a bad call in its own words when the traced code runs. So a fake
kernel reads sizes in a way that cannot fail on malformed input (a missing dimension reads
as 0, a negative size as 0), and refuses only what would make its result wrong: tensors on
different devices, where a CPU call with one meta argument would otherwise dispatch here
and return an uninitialised CPU tensor.
"""

from __future__ import annotations

import torch


def size(t: torch.Tensor, dim: int):
    """``t.shape[dim]``, or 0 when ``t`` has no such dimension."""
    return t.shape[dim] if -t.dim() <= dim < t.dim() else 0


def at_least_0(n: int) -> int:
    """A size argument as a tensor size: negative ones (an error of the native op) as 0."""
    return max(n, 0)


def one_device(op: str, **tensors) -> None:
    """The tensor arguments, by name (None skipped, a list as name[i]), share one device;
    the message is the native ops' own."""
    named = []
    for name, value in tensors.items():
        if isinstance(value, (list, tuple)):
            named += [(f"{name}[{i}]", t) for i, t in enumerate(value)]
        elif value is not None:
            named.append((name, value))
    first, like = named[0] if named else ("", None)
    for name, t in named[1:]:
        if t.device != like.device:
            raise RuntimeError(f"{op}: {first} and {name} must be on the same device, got {like.device} and {t.device}")
