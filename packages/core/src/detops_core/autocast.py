"""Autocast rule shared by the detops ops: floating-point tensor arguments are cast to
float32, the op runs with autocast off, and its floating-point results are cast back to the
dtype of the first floating-point tensor argument (the feature map, the boxes). That is
what torchvision's autocast kernels do, so results keep their dtype inside an autocast
region.

torch.library.register_autocast casts the inputs but cannot cast the results back, so the
rule is an autocast kernel of its own, registered with the public ``Library.impl``.
"""

from __future__ import annotations

from typing import Any, List

import torch

_LIBRARIES: List[torch.library.Library] = []  # registrations live as long as these do
_AUTOCAST_KEYS = {"cpu": "AutocastCPU", "cuda": "AutocastCUDA"}


def _first_floating_dtype(args) -> torch.dtype | None:
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return a.dtype
        if isinstance(a, (list, tuple)):
            for t in a:
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    return t.dtype
    return None


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def register_autocast_float32(qualname: str, device_types=("cpu", "cuda")) -> None:
    """Register the rule above for op ``qualname`` ("namespace::name") on each device."""
    namespace, name = qualname.split("::")
    op = getattr(getattr(torch.ops, namespace), name).default
    lib = torch.library.Library(namespace, "FRAGMENT")
    for device_type in device_types:

        def run(_keyset, *args, _device=device_type):
            dtype = _first_floating_dtype(args)
            # Autocast off for the inner call, so it reaches the device kernel.
            was_enabled = torch.is_autocast_enabled(_device)
            torch.set_autocast_enabled(_device, False)
            try:
                out = op(*_cast(args, torch.float32))
            finally:
                torch.set_autocast_enabled(_device, was_enabled)
            return out if dtype is None else _cast(out, dtype)

        lib.impl(name, run, _AUTOCAST_KEYS[device_type], with_keyset=True)
    _LIBRARIES.append(lib)
