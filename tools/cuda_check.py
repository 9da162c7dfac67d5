"""The CUDA half without a GPU (`nox -s cuda`):

1. compile every package's `.cu` files for sm_80 and sm_90 with nvcc (DETOPS_CUDA=ON);
2. run every CUDA kernel under the CPU emulation of the CUDA execution model
   (detops/cuda_emulation.h): the packages' `test_cuda_emulation.py` files compare the
   emulated kernels with the CPU kernels, in the AddressSanitizer + UBSan build that
   ci/sanitize.py makes (it builds the emulated libraries too), and again under
   ThreadSanitizer for the packages whose kernels use barriers (`__syncthreads`);
3. print `emulated <op> <kernel>: <N> cases OK` for every `__global__` kernel (N: its
   launches in the compared cases of the ASan run), and fail if a kernel never ran, a
   comparison failed or a sanitizer reported anything.

    python ci/cuda_check.py [pkg ...] [--archs "80-real;90"] [--no-compile] [--no-emulation]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import envs  # noqa: E402
import sanitize  # noqa: E402
import test  # noqa: E402

import build  # noqa: E402
import packages  # noqa: E402

REPORT = os.path.join(packages.ROOT, "build", "emulation-launches.jsonl")
TSAN_SITE = os.path.join(envs.ENVS, "tsan-site")
TSAN_DIST = os.path.join(build.DIST, "tsan")
TSAN_CONFIG = [
    "build-dir=build/tsan/{wheel_tag}",
    "cmake.build-type=RelWithDebInfo",
    "cmake.define.CMAKE_CXX_FLAGS=-fsanitize=thread -fno-omit-frame-pointer",
    "cmake.define.DETOPS_CUDA=OFF",
    "cmake.define.DETOPS_CUDA_EMULATION=ON",
]


def cuda_sources(pkg: str) -> list[str]:
    return sorted(glob.glob(os.path.join(packages.path(pkg), "csrc", "cuda", "*.cu")))


def kernels(pkg: str) -> list[str]:
    """Every `__global__` kernel of the package, named as the emulation records launches."""
    names = []
    for path in cuda_sources(pkg):
        stem = os.path.basename(path)[: -len(".cu")].removesuffix("_kernel")
        names += [f"{stem} {k}" for k in re.findall(r"__global__\s+void\s+(\w+)\s*\(", open(path).read())]
    return names


def uses_barriers(pkg: str) -> bool:
    return any("__syncthreads" in open(p).read() for p in cuda_sources(pkg))


def compile_all(native: list[str], archs: str) -> None:
    os.environ["DETOPS_CUDA"] = "ON"
    os.environ["DETOPS_CUDA_ARCHS"] = archs
    build.build(native, ["dev"])
    for pkg in native:
        with zipfile.ZipFile(build.wheel_of(pkg)) as wheel:
            if not any(n.endswith("/_C_cuda.so") for n in wheel.namelist()):
                raise SystemExit(f"[cuda] no _C_cuda.so in the wheel of {pkg}")
        print(f"[cuda] {pkg}: {len(cuda_sources(pkg))} .cu file(s) compiled for {archs}", flush=True)


def emulation_tests(native: list[str]) -> list[str]:
    # test_cuda_emulation.py, and test_<op>_cuda_emulation.py for ops that keep their own.
    return [
        f for p in native for f in sorted(glob.glob(os.path.join(packages.tests_dir(p), "test_*cuda_emulation.py")))
    ]


def thread_sanitizer_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (TSAN_SITE, env.get("PYTHONPATH")) if p)
    env["LD_PRELOAD"] = " ".join((sanitize._runtime("libtsan.so"), sanitize._runtime("libstdc++.so")))
    env["TSAN_OPTIONS"] = f"halt_on_error=1:report_signal_unsafe=0:log_path={os.path.join(sanitize.LOGS, 'tsan')}"
    # torch's OpenMP threads synchronise in uninstrumented code, which TSan would report as
    # races inside torch; the emulated kernels' own threads are what is checked here.
    env["OMP_NUM_THREADS"] = "1"
    return env


def _pytest(python: str, files: list[str], env: dict[str, str]) -> int:
    # One run per file: the files share a name, which one importlib-mode run confuses.
    worst = 0
    for path in files:
        cmd = [python, "-m", "pytest", "--import-mode=importlib", "-q", "-ra", "-p", "no:cacheprovider", path]
        print("[cuda]", " ".join(cmd), flush=True)
        worst = max(worst, subprocess.run(cmd, cwd=test.CWD, env=env).returncode)
    return worst


def _fresh_logs() -> None:
    shutil.rmtree(sanitize.LOGS, ignore_errors=True)
    os.makedirs(sanitize.LOGS)


def _fail_on(rc: int, tool: str, names: list[str]) -> None:
    found = sanitize.reports()
    for path in found:
        print(f"[cuda] {tool} report {path}:\n{open(path, errors='replace').read()}", flush=True)
    if rc != 0 or found:
        raise SystemExit(f"[cuda] emulated kernels of {names} under {tool}: exit status {rc}, {len(found)} report(s)")


def _launches() -> dict[str, int]:
    """Launches per kernel in the comparison run, from the files the tests wrote at exit."""
    launches: dict[str, int] = {}
    for line in open(REPORT):
        for name, count in json.loads(line)["launches"].items():
            launches[name] = launches.get(name, 0) + count
    return launches


def emulate(native: list[str]) -> None:
    python = envs.ensure("dev")
    if os.path.exists(REPORT):
        os.remove(REPORT)
    require = {"DETOPS_REQUIRE_EMULATION": "1", "DETOPS_EMULATION_REPORT": REPORT}
    # ASan + UBSan: the sanitize session's build, which includes the emulated libraries.
    shutil.rmtree(sanitize.SITE, ignore_errors=True)
    build.build(native, into=[], dist=sanitize.DIST, config=sanitize.CONFIG, site=sanitize.SITE)
    env = {**sanitize.environment(), **require}
    sanitize.check_loaded(python, env, native)
    _fresh_logs()
    rc = _pytest(python, emulation_tests(native), env)
    _fail_on(rc, "AddressSanitizer/UBSan", native)
    launches = _launches()
    barrier = [p for p in native if uses_barriers(p)]
    if barrier:
        shutil.rmtree(TSAN_SITE, ignore_errors=True)
        build.build(barrier, into=[], dist=TSAN_DIST, config=TSAN_CONFIG, site=TSAN_SITE)
        env = {**thread_sanitizer_environment(), "DETOPS_REQUIRE_EMULATION": "1"}
        _fresh_logs()
        rc = _pytest(python, emulation_tests(barrier), env)
        _fail_on(rc, "ThreadSanitizer", barrier)
    missing = []
    for pkg in native:
        for name in kernels(pkg):
            if launches.get(name, 0) == 0:
                missing.append(name)
            else:
                print(f"emulated {name}: {launches[name]} cases OK", flush=True)
    if missing:
        raise SystemExit(f"[cuda] kernels the emulation tests never launched: {missing}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("packages", nargs="*", help="default: every package with .cu files")
    parser.add_argument("--archs", default=os.environ.get("DETOPS_CUDA_ARCHS", "80-real;90"))
    parser.add_argument("--no-compile", action="store_true", help="skip the nvcc build")
    parser.add_argument("--no-emulation", action="store_true", help="skip running the emulated kernels")
    args = parser.parse_args()
    native = [p for p in (args.packages or packages.present()) if cuda_sources(p)]
    if not args.no_compile:
        compile_all(native, args.archs)
    if not args.no_emulation:
        emulate(native)
