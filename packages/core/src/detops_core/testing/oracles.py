"""The oracle registry: for each op, detops' function, the pure-PyTorch reference a package's
tests wrote from the definition, and torchvision's function where torchvision has the op;
and one adapter, :func:`call`, that runs any of them by name.

A package's reference module registers its ops once::

    register_op("roi_align", detops=detops_roi.roi_align, reference=roi_align_reference)

and a differential test reads ``call("roi_align", oracle, x, rois, ...)`` for each oracle of
``oracles("roi_align")``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

ORACLE_TORCHVISION = "torchvision"
ORACLE_REFERENCE = "reference"


def torchvision_ops(min_version: tuple = (0, 0)):
    """``torchvision.ops``, or None where torchvision is not installed (the compat environments
    of torch 2.13 and 2.15 have none) or is older than `min_version` (compat-2.11 has 0.26,
    which differs from 0.29 in places). The one place the test suites import torchvision."""
    try:
        import torchvision
        import torchvision.ops
    except ImportError:
        return None
    if tuple(int(v) for v in torchvision.__version__.split("+")[0].split(".")[:2]) < tuple(min_version):
        return None
    return torchvision.ops


@dataclasses.dataclass(frozen=True)
class OpImplementations:
    detops: Callable
    reference: Optional[Callable]
    # Attribute path below torchvision.ops ("roi_align", "poolers.MultiScaleRoIAlign").
    torchvision: Optional[str]
    # The reference loops in Python over CPU tensors: other devices' inputs are copied to
    # the CPU (differentiably, so gradients still reach them) and the result copied back.
    reference_on_cpu: bool


_REGISTRY: dict = {}


def register_op(
    name: str,
    detops: Callable,
    reference: Optional[Callable] = None,
    torchvision: Optional[str] = None,
    reference_on_cpu: bool = True,
) -> None:
    """Register op `name`. `torchvision` defaults to `name` itself when torchvision.ops has an
    attribute of that name; pass "" for an op torchvision does not have."""
    if torchvision is None:
        torchvision = name
    _REGISTRY[name] = OpImplementations(detops, reference, torchvision or None, reference_on_cpu)


def _torchvision_function(path: Optional[str]) -> Optional[Callable]:
    obj = torchvision_ops()
    if obj is None or path is None:
        return None
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def oracles(name: str) -> list:
    """The oracles op `name` is compared with here: "reference" where the package wrote one,
    and "torchvision" where torchvision is installed and has the op."""
    entry = _REGISTRY[name]
    found = [ORACLE_REFERENCE] if entry.reference is not None else []
    if _torchvision_function(entry.torchvision) is not None:
        found.append(ORACLE_TORCHVISION)
    return found


def _device_of(args) -> Any:
    import torch

    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
        if isinstance(a, (list, tuple)):
            found = _device_of(a)
            if found is not None:
                return found
    return None


def _move(value, device):
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_move(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    return value


def implementation(name: str, impl: str) -> Callable:
    """The function of op `name` for `impl` ("detops", "reference" or "torchvision")."""
    entry = _REGISTRY[name]
    if impl == "detops":
        return entry.detops
    if impl == ORACLE_TORCHVISION:
        fn = _torchvision_function(entry.torchvision)
        if fn is None:
            raise LookupError(f"torchvision is not installed or has no {entry.torchvision}")
        return fn
    if impl == ORACLE_REFERENCE:
        if entry.reference is None:
            raise LookupError(f"no reference registered for {name}")
        return entry.reference
    raise ValueError(f"impl must be 'detops', 'reference' or 'torchvision', got {impl!r}")


def call(name: str, impl: str, *args, **kwargs):
    """Run op `name` as `impl` implements it, with the same arguments for every impl."""
    fn = implementation(name, impl)
    device = _device_of(args)
    if impl == ORACLE_REFERENCE and _REGISTRY[name].reference_on_cpu and device is not None and device.type != "cpu":
        return _move(fn(*_move(args, "cpu"), **_move(kwargs, "cpu")), device)
    return fn(*args, **kwargs)
