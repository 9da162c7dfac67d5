"""Every developer and CI action is a nox session (the session names are an interface).

Sessions run no virtualenv of their own: they call ci/ scripts that use the shared
environments in .venvs/ (dev: torch 2.14.1 CUDA build + torchvision 0.29.1; compat-<torch>:
one per ci/requirements-compat-<torch>.txt), so torch is installed once per environment,
not per session.
"""

from __future__ import annotations

import glob
import os
import re
import sys

import nox

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ci"))
import envs  # noqa: E402

import packages  # noqa: E402

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]
PY = sys.executable


def _run(session: nox.Session, script: str, *args: str, **env: str) -> None:
    session.run(PY, os.path.join("ci", script), *args, env=env or None)


def _run_in_dev(session: nox.Session, script: str, *args: str) -> None:
    # Scripts that import torch and detops run in the dev env's python (made if missing).
    session.run(envs.ensure("dev"), os.path.join("ci", script), *args, external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Build every package (CUDA kernels too when nvcc is found) and run all tests."""
    _run(session, "build.py")
    _run(session, "test.py", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Only the fuzzer (test_fuzz.py); `-- --long` for an hour of fresh random examples.

    Without arguments: the fixed examples `tests` runs. `-- --long --fuzz-minutes=N`: N
    minutes instead of 60, shared by the fuzz targets selected (`-k` narrows them)."""
    _run(session, "build.py")
    _run(session, "test.py", "meta", "-k", "test_fuzz", *session.posargs)


def _package_tests(pkg: str):
    def run(session: nox.Session) -> None:
        _run(session, "build.py", pkg)
        _run(session, "test.py", pkg, *session.posargs)

    run.__doc__ = f"Build detops-{pkg} (and what it needs) and run its tests."
    return run


for _pkg in packages.present():
    if _pkg != "core":
        nox.session(name=f"tests-{_pkg}")(_package_tests(_pkg))


def _compat_torches() -> list[str]:
    found = glob.glob(os.path.join(packages.ROOT, "ci", "requirements-compat-*.txt"))
    names = [os.path.basename(f)[len("requirements-compat-") : -len(".txt")] for f in found]
    return sorted(names, key=lambda v: tuple(int(p) for p in v.split(".")))


# Packages whose tests also run installed with detops-core only (compat's last step).
ALONE = ("nms", "deform_attn")


@nox.session
def compat(session: nox.Session) -> None:
    """The wheels built once against torch 2.14.1, installed and tested under torch 2.11.0
    (with torchvision 0.26.0), 2.13.0 (CPU-only) and 2.15.0 (op-level tests: whole models
    are `nox -s tests`'s); then detops-nms and detops-deform-attn each installed alone.

    `nox -s compat -- 2.11` tests only the torch versions given first; the arguments after
    them go to pytest."""
    known = _compat_torches()
    args = list(session.posargs)
    torches = []
    while args and re.fullmatch(r"\d+\.\d+", args[0]):
        if args[0] not in known:
            session.error(f"no ci/requirements-compat-{args[0]}.txt; known torch versions: {known}")
        torches.append(args.pop(0))
    envs = [f"compat-{v}" for v in torches or known]
    # Create the environments (a cold torch install takes minutes) before build.py takes
    # the dist/ lock that other builds wait on.
    for env in envs:
        _run(session, "envs.py", env)
    _run(session, "build.py", *(a for env in envs for a in ("--into", env)))
    for env in envs:
        _run(session, "test.py", "--env", env, "-m", "not whole_model", *args)
    # A microlibrary installed with only detops-core works: the NMS one and the newest.
    for pkg in ALONE:
        _run(session, "build.py", "--into", f"{pkg}-alone", pkg)
        _run(session, "test.py", "--env", f"{pkg}-alone", pkg, "-m", "not whole_model")


@nox.session
def sanitize(session: nox.Session) -> None:
    """All tests against ASan + UBSan builds of the native packages; any report fails.

    The emulated CUDA kernels' tests are left to `nox -s cuda`, which runs them on this
    same build. RelWithDebInfo, float-cast-overflow included, own build dirs; the
    wheels go only into a folder of the run (never into .venvs/dev). Reports raised in a
    test's subprocess fail the session too. `nox -s sanitize -- roi -x`: the tests of the
    packages named first, the rest goes to pytest (see ci/sanitize.py)."""
    _run(session, "sanitize.py", *session.posargs)


@nox.session
def cuda(session: nox.Session) -> None:
    """Compile every .cu for sm_80 and sm_90, then run every CUDA kernel under the CPU
    emulation (detops/cuda_emulation.h) against the CPU kernels, under ASan + UBSan (the
    sanitize build) and ThreadSanitizer for kernels with barriers; prints
    `emulated <op> <kernel>: <N> cases OK` per kernel (see ci/cuda_check.py)."""
    _run(session, "cuda_check.py", *session.posargs)


@nox.session
def gpu(session: nox.Session) -> None:
    """On an NVIDIA GPU: build, all tests, compute-sanitizer, benchmark; writes gpu-report.md.

    ci/gpu_check.py (its options follow `--`) with $PYTHON, else .venvs/dev's python when it
    exists, else python3; installs nothing. Exit status 3: no GPU (nothing built); 4: a
    prerequisite is missing."""
    dev = os.path.join(packages.ROOT, ".venvs", "dev", "bin", "python")
    python = os.environ.get("PYTHON") or (dev if os.path.exists(dev) else "python3")
    session.run(python, os.path.join("ci", "gpu_check.py"), *session.posargs, external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Interleaved benchmarks against torchvision 0.29.1 (2 threads); prints ratios."""
    _run(session, "build.py")
    _run_in_dev(session, "bench.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (check and format) for Python, clang-format for C++ and CUDA."""
    _run(session, "lint.py")


@nox.session
def demo(session: nox.Session) -> None:
    """Build and install everything, then run the detection demo."""
    _run(session, "build.py")
    _run_in_dev(session, "demo.py", *session.posargs)


@nox.session
def cpp(session: nox.Session) -> None:
    """C++ without Python: build the packages, then examples/cpp's program (CMake, libtorch;
    kept build dir build/cpp-example), and run examples/cpp/test_cpp_example.py: AOTInductor
    packages made in Python (a small roi_align + batched_nms model, and Faster R-CNN) run
    from C++, compared with eager and with the package loaded in Python. Arguments after
    `--` go to pytest (`-- -k "not fasterrcnn"`: the small model only)."""
    _run(session, "build.py")
    session.run(envs.ensure("dev"), "-m", "pytest", "-q", "-ra", "-s", "examples/cpp", *session.posargs, external=True)
