"""detops-core: what the native detops packages share.

At build time, CMake finds ``detops_coreConfig.cmake`` (see :func:`cmake_dir`) and the
C++ headers (see :func:`include_dir`). At run time, every package's ``_library.py``
calls :func:`load_extension`; a C++ program without Python loads the files
:func:`native_libraries` names.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["cmake_dir", "include_dir", "load_extension", "native_libraries"]
__version__ = __import__("importlib.metadata").metadata.version("detops-core")

_HERE = os.path.dirname(os.path.abspath(__file__))


def cmake_dir() -> str:
    """Folder holding ``detops_coreConfig.cmake`` (pass as ``detops_core_DIR``)."""
    return os.path.join(_HERE, "cmake")


def include_dir() -> str:
    """Folder holding the ``detops/*.h`` headers."""
    return os.path.join(_HERE, "include")


def native_libraries(package: str) -> list[str]:
    """The shared libraries that register `package`'s ops, in load order, for a program
    without Python (dlopen them, or ``torch.ops.load_library``): ``lib<package>_ops.so``
    (schemas and CPU kernels) and, when torch is a CUDA build and the package was built
    with CUDA kernels, ``_C_cuda.so``. Nothing is imported or loaded."""
    import importlib.util

    import torch

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"no installed package {package!r}")
    folder = list(spec.submodule_search_locations)[0]
    found = [os.path.join(folder, f"lib{package}_ops.so")]
    if not os.path.exists(found[0]):
        raise FileNotFoundError(f"{package} has no ops library {found[0]} (built before detops-core 0.1.0 split it?)")
    cuda_lib = os.path.join(folder, "_C_cuda.so")
    if torch.version.cuda and os.path.exists(cuda_lib):
        found.append(cuda_lib)
    return found


def load_extension(package: str) -> ModuleType:
    """Import ``<package>._C`` and, when torch is a CUDA build and the package was built
    with CUDA kernels, load ``<package>/_C_cuda.so``. ``_C`` is a thin pybind11 module
    (build_info); importing it loads ``lib<package>_ops.so`` next to it (op schemas and CPU
    kernels), which the CUDA kernels are registered after.

    A CPU-only torch never touches ``_C_cuda.so``: it links the CUDA runtime, which such a
    torch does not ship.
    """
    import torch

    module = importlib.import_module(f"{package}._C")
    cuda_lib = os.path.join(os.path.dirname(os.path.abspath(module.__file__)), "_C_cuda.so")
    if torch.version.cuda and os.path.exists(cuda_lib):
        torch.ops.load_library(cuda_lib)
    return module
