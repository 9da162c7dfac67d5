"""ruff (lint + format check) for Python, clang-format check for C++ and CUDA sources."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import envs  # noqa: E402

import packages  # noqa: E402

if __name__ == "__main__":
    bindir = os.path.dirname(envs.ensure("dev"))
    root = packages.ROOT
    failed = False
    for cmd in (["ruff", "check", "."], ["ruff", "format", "--check", "."]):
        failed |= subprocess.run([os.path.join(bindir, cmd[0]), *cmd[1:]], cwd=root).returncode != 0
    sources = [
        f
        for ext in ("cpp", "h", "cu", "cuh")
        for f in glob.glob(os.path.join(root, "packages", "**", f"*.{ext}"), recursive=True)
        if "/build/" not in f
    ]
    fmt = subprocess.run([os.path.join(bindir, "clang-format"), "--dry-run", "--Werror", *sorted(sources)], cwd=root)
    failed |= fmt.returncode != 0
    print(f"[lint] {'FAILED' if failed else 'clean'}: python (ruff), {len(sources)} C++/CUDA files (clang-format)")
    sys.exit(1 if failed else 0)
