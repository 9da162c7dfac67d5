"""Compile every package's CUDA sources (DETOPS_CUDA=ON) and check that each package with
.cu files produced _C_cuda.so. Runs without a GPU: nothing is executed.

    python ci/cuda_check.py [--archs "80-real;90"]
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build  # noqa: E402

import packages  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("packages", nargs="*", help="default: every package with .cu files")
    parser.add_argument("--archs", default=os.environ.get("DETOPS_CUDA_ARCHS", "80-real;90"))
    args = parser.parse_args()
    os.environ["DETOPS_CUDA"] = "ON"
    os.environ["DETOPS_CUDA_ARCHS"] = args.archs
    native = [
        p
        for p in (args.packages or packages.present())
        if glob.glob(os.path.join(packages.path(p), "csrc", "**", "*.cu"), recursive=True)
    ]
    build.build(native, ["dev"])
    missing = []
    for pkg in native:
        sources = glob.glob(os.path.join(packages.path(pkg), "csrc", "**", "*.cu"), recursive=True)
        with zipfile.ZipFile(build.wheel_of(pkg)) as wheel:
            if not any(n.endswith("/_C_cuda.so") for n in wheel.namelist()):
                missing.append(pkg)
        print(f"[cuda] {pkg}: {len(sources)} .cu file(s) compiled for {args.archs}")
    if missing:
        raise SystemExit(f"[cuda] no _C_cuda.so in the wheels of {missing}")
