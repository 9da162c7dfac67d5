"""Which ATen operators a call runs that would make the host wait for a CUDA stream, seen on
any device: the proof of the no-host-synchronisation policy (docs/behaviour.md) on machines
without a GPU, for the Python layer (on the CPU) and for the CUDA host code (under the
emulation, emulation.py).

The recorder is torch's profiler, which sees every operator that goes through the
dispatcher, those that C++ code calls through the stable ABI included. What it cannot see
is a copy to the host, which looks like any other copy when every tensor is on the CPU:
test_no_host_sync.py checks separately that no CUDA host code names the CPU device.
"""

from __future__ import annotations

# Operators whose CUDA implementations wait for the stream: they return a value to the host
# (item, and everything that converts a tensor to a Python number or bool) or an output whose
# size depends on the data. Boolean-mask indexing and torch.where(condition) run nonzero.
SYNCHRONISING_OPS = frozenset(
    "aten::" + name
    for name in (
        "_local_scalar_dense",
        "item",
        "is_nonzero",
        "equal",
        "allclose",
        "nonzero",
        "nonzero_numpy",
        "argwhere",
        "masked_select",
        "_unique",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
        "unique_dim_consecutive",
        "bincount",
        "histc",
        "repeat_interleave",
    )
)

# detops ops whose output size is the data's to decide (the number of boxes NMS keeps): the
# host must read it to allocate the output, as torchvision's NMS does. Every other op must
# not synchronise.
SIZE_FROM_DATA = frozenset(
    ("nms", "batched_nms", "nms_per_image", "soft_nms", "batched_soft_nms", "nms_rotated", "batched_nms_rotated")
)


def host_synchronisations(fn, *args, skip_inside: str | None = None, **kwargs):
    """(fn(*args, **kwargs), the names of the synchronising operators it ran, in call order).

    skip_inside: a name prefix such as "detops::"; operators run inside an operator whose
    name starts with it are not counted (on the CPU, what the native kernels do inside)."""
    import torch

    with torch.autograd.profiler.profile(use_kineto=False) as recording:
        result = fn(*args, **kwargs)
    found = []
    for event in recording.function_events:
        if event.name not in SYNCHRONISING_OPS:
            continue
        parent = event.cpu_parent
        while skip_inside is not None and parent is not None and not parent.name.startswith(skip_inside):
            parent = parent.cpu_parent
        if skip_inside is None or parent is None:
            found.append(event.name)
    return result, found
