"""How every detops package is built, shared by noxfile.py and tools/gpu_check.py.

Builds run without build isolation against the building environment's torch, with the
CMake build folder each pyproject.toml keeps (`build-dir`), so an unchanged package rebuilds
in seconds. Every native package finds detops-core's CMake config in this tree, so the
packages build in any order, in one `pip wheel` call.
"""

from __future__ import annotations

import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(f"{ROOT}/packages/*/pyproject.toml"))
CORE_CMAKE = os.path.join(ROOT, "packages", "core", "src", "detops_core", "cmake")
# Tests run from here, outside the sources, so the installed wheels are what gets imported.
TESTS_CWD = os.path.join(ROOT, "tools")


def tests_dirs(names: list[str]) -> list[str]:
    return [d for d in (os.path.join(ROOT, "packages", p, "tests") for p in names) if os.path.isdir(d)]


def wheel_command(python: str, names: list[str], dist: str, *settings: str) -> list[str]:
    """`pip wheel` of the packages `names` into `dist`; `settings` are scikit-build-core's."""
    core = f"-Ccmake.define.detops_core_DIR={CORE_CMAKE}"
    pip = [python, "-m", "pip", "--disable-pip-version-check", "wheel", "-q", "--no-build-isolation", "--no-deps"]
    return [*pip, "-w", dist, core, *settings, *(os.path.join(ROOT, "packages", p) for p in names)]
