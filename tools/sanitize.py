"""The sanitizer builds and their checks (`nox -s sanitize`, `nox -s cuda`).

The sanitized wheels (CPU kernels and the CUDA kernels' CPU emulation, RelWithDebInfo) have
their own CMake build dirs (packages/<pkg>/build/sanitize/) and go only into a folder put
first on PYTHONPATH (the dev env keeps its normal wheels). Reports go to files in a log
folder, so one raised in a test's subprocess fails the run even if the test ignores it."""

from __future__ import annotations

import glob
import os
import re
import subprocess

from build import ROOT, TESTS_CWD

# gcc leaves float-cast-overflow out of `undefined`; without -fno-sanitize-recover UBSan
# would print and carry on. Frame pointers keep ASan's fast unwinder's stacks whole.
FLAGS = "-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer"
_COMMON = ["cmake.build-type=RelWithDebInfo", "cmake.define.DETOPS_CUDA=OFF", "cmake.define.DETOPS_CUDA_EMULATION=ON"]
ASAN_CONFIG = ["build-dir=build/sanitize/{wheel_tag}", f"cmake.define.CMAKE_CXX_FLAGS={FLAGS}", *_COMMON]
TSAN_FLAGS = "-fsanitize=thread -fno-omit-frame-pointer"
TSAN_CONFIG = ["build-dir=build/tsan/{wheel_tag}", f"cmake.define.CMAKE_CXX_FLAGS={TSAN_FLAGS}", *_COMMON]

# UBSan needs this folder's sitecustomize to honour log_path (see there).
HOOK = os.path.join(ROOT, "tools", "sanitize_hook")
# abort_on_error: SIGABRT instead of exit(1), so pytest's faulthandler prints the Python
# stack, which names the test that was running. detect_leaks=0: CPython and torch keep
# allocations alive until exit on purpose. allocator_may_return_null: torch turns a failed
# malloc into a RuntimeError, which tests of absurd sizes expect (a failed `new` still reports).
ASAN_OPTIONS = "detect_leaks=0:allocator_may_return_null=1:abort_on_error=1"
UBSAN_OPTIONS = "print_stacktrace=1:halt_on_error=1:abort_on_error=1"


def _runtime(name: str) -> str:
    path = os.path.realpath(subprocess.check_output(["gcc", f"-print-file-name={name}"], text=True).strip())
    if not os.path.isfile(path):
        raise SystemExit(f"[sanitize] gcc has no {name}")
    return path


def environment(site: str, logs: str, thread: bool = False) -> dict[str, str]:
    """What a process needs to run the sanitized wheels in `site` (ASan + UBSan, or TSan with
    `thread`), reporting into `logs`; subprocesses of the tests inherit it."""
    log = f"log_path={os.path.join(logs, 'report')}"
    # gcc 12's ASan looks up the real __cxa_throw once, at start-up: unless libstdc++ is
    # loaded by then (python does not link it), the first C++ throw fails a CHECK in ASan.
    preload = [_runtime("libtsan.so" if thread else "libasan.so"), _runtime("libstdc++.so")]
    env = {"PYTHONPATH": os.pathsep.join(p for p in (site, HOOK, os.environ.get("PYTHONPATH")) if p)}
    env["LD_PRELOAD"] = " ".join(p for p in (*preload, os.environ.get("LD_PRELOAD")) if p)
    if thread:
        env["TSAN_OPTIONS"] = f"halt_on_error=1:report_signal_unsafe=0:{log}"
        # torch's OpenMP threads synchronise in uninstrumented code, which TSan would report
        # as races inside torch; the emulated kernels' own threads are what is checked.
        env["OMP_NUM_THREADS"] = "1"
        return env
    env["ASAN_OPTIONS"], env["UBSAN_OPTIONS"] = f"{ASAN_OPTIONS}:{log}", f"{UBSAN_OPTIONS}:{log}"
    # The fuzzer's per-call limit (0.5 s) is for uninstrumented builds; a hang still trips its watchdog.
    env["DETOPS_FUZZ_CALL_LIMIT"] = os.environ.get("DETOPS_FUZZ_CALL_LIMIT", "5")
    return env


_WHERE = """
import importlib, sys, sitecustomize
print(sitecustomize.__file__)
for name in sys.argv[1:]:
    importlib.import_module(name)
    print(sys.modules[name + "._C"].__file__)
"""


def check_loaded(python: str, env: dict[str, str], natives: list[str], site: str, runtime="libasan") -> None:
    """Fail unless the tests would import the `_C` of every native package from `site`,
    built against the sanitizer `runtime`, and the hook that sends UBSan's reports to the
    log folder."""
    names = [f"detops_{p}" for p in natives]
    out = subprocess.run(
        [python, "-c", _WHERE, *names], env={**os.environ, **env}, cwd=TESTS_CWD, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"[sanitize] importing {names} failed:\n{out.stdout}{out.stderr}")
    hook, *paths = out.stdout.split()
    if os.path.dirname(os.path.realpath(hook)) != os.path.realpath(HOOK):
        raise SystemExit(f"[sanitize] python imports {hook} as sitecustomize, not {HOOK}'s")
    for path in paths:
        needed = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
        if not os.path.realpath(path).startswith(os.path.realpath(site) + os.sep) or runtime not in needed:
            raise SystemExit(f"[sanitize] {path} is not a sanitized build from {site}")
        print(f"[sanitize] uses {path}", flush=True)


# With allocator_may_return_null, ASan logs each allocation it refuses: not a report.
_REFUSED = re.compile(r"==\d+==WARNING: AddressSanitizer failed to allocate 0x[0-9a-f]+ bytes")


def reports(logs: str) -> int:
    """Print every log file in `logs` holding anything but refused-allocation notes; their count."""
    found = 0
    for path in sorted(glob.glob(os.path.join(logs, "*"))):
        text = open(path, errors="replace").read()
        if any(line.strip() and not _REFUSED.fullmatch(line.strip()) for line in text.splitlines()):
            print(f"[sanitize] report {os.path.basename(path)}:\n{text}", flush=True)
            found += 1
    return found


def kernels(pkg: str, barriers: bool = False) -> list[str]:
    """Every `__global__` kernel of the package, named as the emulation records launches;
    with `barriers`, those of the .cu files that use __syncthreads."""
    names = []
    for path in sorted(glob.glob(os.path.join(ROOT, "packages", pkg, "csrc", "cuda", "*.cu"))):
        stem, source = os.path.basename(path)[: -len(".cu")].removesuffix("_kernel"), open(path).read()
        if not barriers or "__syncthreads" in source:
            names += [f"{stem} {k}" for k in re.findall(r"__global__\s+void\s+(\w+)\s*\(", source)]
    return names
