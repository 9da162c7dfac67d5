"""The whole test suite against the native packages built with AddressSanitizer and
UndefinedBehaviorSanitizer (float-cast-overflow included); any sanitizer report fails.

    python ci/sanitize.py [pkg ...] [pytest args]

The sanitized wheels (CPU kernels only, RelWithDebInfo) are built in their own CMake build
dirs (packages/<pkg>/build/sanitize/) into dist/sanitize/ and installed, with detops-core
and the pure-Python packages, only into a folder of this run (build/sanitize-runs/run-*/
site, removed at the end): the dev env keeps its normal wheels, and the tests run on its
python with that folder first on PYTHONPATH. Reports go to files in the run's logs/
folder, so one raised in a subprocess of a test fails the run too, even when the test
swallows that subprocess's exit status.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import envs  # noqa: E402
import test  # noqa: E402

import build  # noqa: E402
import packages  # noqa: E402

DIST = os.path.join(build.DIST, "sanitize")
# Each run installs and logs into its own folder under RUNS: two runs at once in this
# shared tree (their builds take turns) cannot pull each other's files away mid-test.
RUNS = os.path.join(packages.ROOT, "build", "sanitize-runs")
# Defaults for other scripts that reuse this build and run one at a time.
SITE = os.path.join(envs.ENVS, "sanitize-site")
LOGS = os.path.join(packages.ROOT, "build", "sanitize-logs")

# gcc leaves float-cast-overflow out of `undefined`; without -fno-sanitize-recover UBSan
# would print and carry on. Frame pointers keep ASan's fast unwinder's stacks whole.
FLAGS = "-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer"
CONFIG = [
    "build-dir=build/sanitize/{wheel_tag}",
    "cmake.build-type=RelWithDebInfo",
    f"cmake.define.CMAKE_CXX_FLAGS={FLAGS}",
    "cmake.define.DETOPS_CUDA=OFF",
    # The CPU emulation of the CUDA kernels too: the suite's test_cuda_emulation.py files
    # run them here, and ci/cuda_check.py (nox -s cuda) reuses this build.
    "cmake.define.DETOPS_CUDA_EMULATION=ON",
]

# Reports land in <logs>/report.<pid>; UBSan needs HOOK's sitecustomize to honour that.
HOOK = os.path.join(packages.ROOT, "ci", "sanitize_hook")
# abort_on_error: SIGABRT instead of exit(1), so pytest's faulthandler prints the Python
# stack, which names the test that was running.
ASAN_OPTIONS = [
    # CPython and torch keep allocations alive until exit on purpose.
    "detect_leaks=0",
    # torch turns a failed malloc into a RuntimeError, which tests of absurd sizes expect;
    # ASan would abort on any request over 1 TiB instead. A failed `new` still reports.
    "allocator_may_return_null=1",
    "abort_on_error=1",
]
UBSAN_OPTIONS = ["print_stacktrace=1", "halt_on_error=1", "abort_on_error=1"]


def _runtime(name: str) -> str:
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=True)
    path = os.path.realpath(path.stdout.strip())
    if not os.path.isfile(path):
        raise SystemExit(f"[sanitize] gcc has no {name}")
    return path


def environment(site: str = SITE, logs: str = LOGS) -> dict[str, str]:
    """What a process needs to run the sanitized wheels installed in `site`, reporting into
    `logs`; subprocesses of the tests inherit it. Python is not instrumented, so the ASan
    runtime must be loaded before anything."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (site, HOOK, env.get("PYTHONPATH")) if p)
    # gcc 12's ASan looks up the real __cxa_throw once, at start-up: unless libstdc++ is
    # loaded by then (python does not link it), the first C++ throw (pybind11, torch)
    # fails a CHECK inside ASan.
    runtimes = [_runtime("libasan.so"), _runtime("libstdc++.so")]
    env["LD_PRELOAD"] = " ".join(p for p in (*runtimes, env.get("LD_PRELOAD")) if p)
    log_path = f"log_path={os.path.join(logs, 'report')}"
    env["ASAN_OPTIONS"] = ":".join((*ASAN_OPTIONS, log_path))
    env["UBSAN_OPTIONS"] = ":".join((*UBSAN_OPTIONS, log_path))
    # The fuzzer's per-call limit (0.5 s) is for uninstrumented builds; ASan's shadow memory
    # and checks make calls several times slower. A hang still trips its watchdog.
    env.setdefault("DETOPS_FUZZ_CALL_LIMIT", "5")
    return env


_WHERE = """
import importlib, sys, sitecustomize
print(sitecustomize.__file__)
for name in sys.argv[1:]:
    importlib.import_module(name)
    print(sys.modules[name + "._C"].__file__)
"""


def check_loaded(python: str, env: dict[str, str], natives: list[str], site: str = SITE) -> None:
    """Fail unless the tests would import the sanitized `_C` of every native package, and
    the hook that sends UBSan's reports to the log folder."""
    names = [f"detops_{p}" for p in natives]
    out = subprocess.run([python, "-c", _WHERE, *names], env=env, cwd=test.CWD, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"[sanitize] importing {names} failed:\n{out.stdout}{out.stderr}")
    hook, *paths = out.stdout.split()
    if os.path.dirname(os.path.realpath(hook)) != os.path.realpath(HOOK):
        raise SystemExit(f"[sanitize] python imports {hook} as sitecustomize, not {HOOK}'s")
    for path in paths:
        needed = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
        if not os.path.realpath(path).startswith(os.path.realpath(site) + os.sep) or "libasan" not in needed:
            raise SystemExit(f"[sanitize] {path} is not a sanitized build from {site}")
        print(f"[sanitize] uses {path}", flush=True)


# With allocator_may_return_null, ASan logs each allocation it refuses: not a report.
_REFUSED = re.compile(r"==\d+==WARNING: AddressSanitizer failed to allocate 0x[0-9a-f]+ bytes")


def reports(logs: str = LOGS) -> dict[str, str]:
    """Log files in `logs` holding anything but refused-allocation notes, with their text."""
    found = {}
    for path in sorted(glob.glob(os.path.join(logs, "*"))):
        with open(path, errors="replace") as f:
            text = f.read()
        if any(line.strip() and not _REFUSED.fullmatch(line.strip()) for line in text.splitlines()):
            found[path] = text
    return found


def _native(pkg: str) -> bool:
    return os.path.exists(os.path.join(packages.path(pkg), "CMakeLists.txt"))


def main(argv: list[str]) -> int:
    # Leading package names pick the tests (default: every package's); the rest is pytest's.
    extra = list(argv)
    names = []
    while extra and extra[0] in packages.present():
        names.append(extra.pop(0))
    names = names or packages.present()
    os.makedirs(RUNS, exist_ok=True)
    run = tempfile.mkdtemp(prefix="run-", dir=RUNS)
    try:
        site, logs = os.path.join(run, "site"), os.path.join(run, "logs")
        os.makedirs(logs)
        build.build(names, into=[], dist=DIST, config=CONFIG, site=site)
        python = envs.ensure("dev")
        env = environment(site, logs)
        check_loaded(python, env, [p for p in packages.closure(names) if _native(p)], site)
        # The emulated CUDA kernels' tests run on this same build in `nox -s cuda`
        # (ci/cuda_check.py, which reports per kernel): not twice in CI.
        emulation = [
            f for p in names for f in glob.glob(os.path.join(packages.tests_dir(p) or "", "test_*cuda_emulation.py"))
        ]
        skip = [f"--ignore={f}" for f in emulation]
        # Whole-model tests spend their time tracing and compiling in Python; every op they
        # call is exercised here by the op-level tests.
        skip += ["-m", "not whole_model"]
        rc = test.run(python, names, skip + extra, env=env)
        found = reports(logs)
    finally:
        shutil.rmtree(run, ignore_errors=True)
    for path, text in found.items():
        print(f"[sanitize] report {os.path.basename(path)}:\n{text}", flush=True)
    if found or rc != 0:
        print(f"[sanitize] FAILED: pytest exit status {rc}, {len(found)} sanitizer report(s)", flush=True)
        return 1
    print("[sanitize] clean: no sanitizer reports", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
