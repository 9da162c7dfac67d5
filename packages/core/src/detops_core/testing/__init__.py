"""The detops test toolkit (used by the test suites, never by the ops): where tests run
(devices), what results are compared with (oracles), one check per piece of torch
machinery (machinery), CPU-vs-CUDA bounds, the CUDA emulation, ONNX Runtime sessions and
child processes for inputs that once crashed. A test file imports what it needs from here
and states only its cases and assertions.
"""

from .cuda_compare import assert_cuda_matches_cpu, cpu_vs_cuda_tolerance
from .devices import NO_CUDA_REASON, devices, float_dtypes, full_float32, requires_cuda, to_device
from .emulation import (
    EMULATION_NAMESPACE,
    assert_block_order_changes_bits,
    assert_same_bits_in_every_block_order,
    block_schedule,
    emulated_launches,
    emulated_ops,
    emulated_widest,
    require_emulated_ops,
)
from .host_sync import host_synchronisations
from .isolation import run_isolated
from .machinery import (
    assert_autocast_float32,
    assert_compiles,
    assert_exports,
    assert_opcheck,
    assert_same,
    assert_scripts,
    assert_traced_raises_like_native,
    backward_through,
    deterministically,
    fresh_leaves,
)
from .onnx_checks import onnx_session
from .oracles import call, implementation, oracles, register_op, torchvision_ops

__all__ = [
    "EMULATION_NAMESPACE",
    "NO_CUDA_REASON",
    "assert_autocast_float32",
    "assert_block_order_changes_bits",
    "assert_compiles",
    "assert_cuda_matches_cpu",
    "assert_exports",
    "assert_traced_raises_like_native",
    "assert_opcheck",
    "assert_same",
    "assert_same_bits_in_every_block_order",
    "assert_scripts",
    "backward_through",
    "block_schedule",
    "call",
    "cpu_vs_cuda_tolerance",
    "deterministically",
    "devices",
    "emulated_launches",
    "emulated_widest",
    "emulated_ops",
    "float_dtypes",
    "fresh_leaves",
    "full_float32",
    "host_synchronisations",
    "implementation",
    "onnx_session",
    "oracles",
    "register_op",
    "require_emulated_ops",
    "requires_cuda",
    "run_isolated",
    "to_device",
    "torchvision_ops",
]
