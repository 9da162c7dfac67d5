"""The C++ argument checks' words (detops/checks.h), written once in Python for the fake
kernels, so that torch.compile and torch.export (which run the fake kernel) raise what the
native op raises, character for character.

    torch._check(ok, lambda: f"{op}: input must be ..., got {dtype_name(input.dtype)}")
"""

from __future__ import annotations

import torch

# As checks.h's dtype_name(): torch's own str() would say "torch.float32".
_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.int16: "int16",
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.bool: "bool",
}
FLOATING = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, "an unsupported dtype")


def shape_str(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def device_str(t: torch.Tensor) -> str:
    return str(t.device)  # "cpu", "cuda:0": as checks.h's device_str() for those two


def check_floating(op: str, name: str, t: torch.Tensor) -> None:
    torch._check(
        t.dtype in FLOATING,
        lambda: (
            f"{op}: {name} must be a floating-point tensor (float32, float64, float16 or bfloat16), "
            f"got {dtype_name(t.dtype)}"
        ),
    )


def check_same_dtype(op: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    torch._check(
        a.dtype == b.dtype,
        lambda: (
            f"{op}: {name_a} and {name_b} must have the same dtype, got {dtype_name(a.dtype)} and {dtype_name(b.dtype)}"
        ),
    )


def check_same_device(op: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    torch._check(
        a.device == b.device,
        lambda: f"{op}: {name_a} and {name_b} must be on the same device, got {device_str(a)} and {device_str(b)}",
    )


def check_dim(op: str, name: str, t: torch.Tensor, dim: int, expected_shape: str) -> None:
    torch._check(
        t.dim() == dim,
        lambda: f"{op}: {name} must be a {dim}-D tensor of shape {expected_shape}, got shape {shape_str(t)}",
    )
