"""detops-core: what the native detops packages share.

At build time, CMake finds ``detops_coreConfig.cmake`` (see :func:`cmake_dir`) and the
C++ headers (see :func:`include_dir`). At run time, every package's ``_library.py``
calls :func:`load_extension`.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["cmake_dir", "include_dir", "load_extension"]
__version__ = "0.1.0"

_HERE = os.path.dirname(os.path.abspath(__file__))


def cmake_dir() -> str:
    """Folder holding ``detops_coreConfig.cmake`` (pass as ``detops_core_DIR``)."""
    return os.path.join(_HERE, "cmake")


def include_dir() -> str:
    """Folder holding the ``detops/*.h`` headers."""
    return os.path.join(_HERE, "include")


def load_extension(package: str) -> ModuleType:
    """Import ``<package>._C`` (schemas and CPU kernels) and, when torch is a CUDA build
    and the package was built with CUDA kernels, load ``<package>/_C_cuda.so``.

    A CPU-only torch never touches ``_C_cuda.so``: it links the CUDA runtime, which such a
    torch does not ship.
    """
    import torch

    module = importlib.import_module(f"{package}._C")
    cuda_lib = os.path.join(os.path.dirname(os.path.abspath(module.__file__)), "_C_cuda.so")
    if torch.version.cuda and os.path.exists(cuda_lib):
        torch.ops.load_library(cuda_lib)
    return module
