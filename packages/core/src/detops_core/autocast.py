"""Autocast rule shared by the detops ops that return feature values (RoI family,
deform_conv2d): floating-point tensor arguments are cast to float32, the op runs, and its
floating-point results are cast back to the dtype of the first floating-point tensor
argument (the feature map). That is what torchvision's autocast kernels do, so results
keep their dtype inside an autocast region.

torch.library.register_autocast casts inputs but cannot cast results back, hence this.
"""

from __future__ import annotations

from typing import Any, List

import torch

_LIBRARIES: List[torch.library.Library] = []  # registrations live as long as these do


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
    for device_type in device_types:
        key_name = "Autocast" + torch._C._dispatch_key_for_device(device_type)
        key = getattr(torch._C.DispatchKey, key_name)

        def run(*args, _key=key):
            with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(_key)):
                dtype = _first_floating_dtype(args)
                out = op(*_cast(args, torch.float32))
            return out if dtype is None else _cast(out, dtype)

        # Both paths torch uses: the C++ dispatcher (eager) and the Python dispatcher
        # (tracing under torch.compile / export), as torch.library.register_autocast does.
        if op.has_kernel_for_dispatch_key(key):
            op.py_kernels.pop(key, None)
        op.py_impl(key)(run)
        lib = torch.library.Library(namespace, "FRAGMENT")
        lib.impl(name, lambda _keyset, *args, _run=run: _run(*args), key_name, with_keyset=True)
        _LIBRARIES.append(lib)
