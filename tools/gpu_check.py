"""One command for a machine with an NVIDIA GPU (`nox -s gpu`): build every package for this
GPU, run the whole test suite (CUDA cases included), run one op's CUDA tests per package
under compute-sanitizer (memcheck, racecheck), benchmark every op against torchvision's
CUDA kernels, and write one markdown report. Installs nothing into the environment and
downloads nothing.

    python ci/gpu_check.py [--report gpu-report.md] [--allow-no-gpu]

Needs a CUDA build of torch >= 2.11 with torchvision, nvcc, cmake and the build
requirements (scikit-build-core, pybind11) in this Python's environment; pytest-xdist,
pytest-timeout and compute-sanitizer are used when present. The wheels go into a --target
folder put first on PYTHONPATH (build/gpu-check/site); the CMake build folders are kept
between runs. Every stage has a time limit, so the report is always written; the defaults
(seconds: build 120, tests 160, sanitizer 70, bench 80) keep an H200 run under 8 minutes,
and DETOPS_GPU_LIMIT_<STAGE> overrides one. Beside the report, <report stem>-logs.tar.gz
holds every command's output. --allow-no-gpu runs the same stages where no GPU is (to try
this script): the CUDA test cases skip and the benchmark and sanitizer say they cannot run.

Exit status: 0 every stage passed; 1 something failed or ran out of time; 3 no NVIDIA GPU
found (nothing built); 4 a prerequisite is missing (nothing built).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import datetime
import glob
import importlib.metadata
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test  # noqa: E402

import packages  # noqa: E402

# Per package: a small test file and a -k expression picking one op's CUDA cases, checked
# against the reference oracle only (torchvision's kernels are not ours to check).
SANITIZE = {
    "nms": ("test_differential.py", "cuda and test_nms_matches_oracle and reference"),
    "roi": ("test_roi_differential.py", "cuda and roi_align and not ps_roi_align and not torchvision"),
    "deform": ("test_devices.py", "cuda"),
    "deform_attn": ("test_devices.py", "cuda"),
    "fpn": ("test_upsample_add.py", "cuda"),
}
LIMITS = {"build": 120, "tests": 160, "sanitizer": 70, "bench": 80}
SANITIZER_ERRORS = 86  # compute-sanitizer's exit status on findings, apart from pytest's 0-5
NO_GPU, MISSING = 3, 4


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tool(name: str) -> str | None:
    # The CUDA toolkit's tools are often installed off PATH.
    return shutil.which(name) or shutil.which(
        name, path=os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin")
    )


def _first_line(cmd: list[str], containing: str = "") -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.splitlines()
    return next((line.strip() for line in out if containing in line), out[0] if out else "?")


def probe() -> tuple[dict, list[str], str | None]:
    """(what the machine has, what is missing, the GPU's architecture or None)."""
    found, missing, arch = {"GPU": None, "CPU": f"{os.cpu_count()} cores", "Python": sys.version.split()[0]}, [], None
    try:
        import torch
    except Exception as e:  # a broken install raises more than ImportError
        return found, [f"torch cannot be imported: {type(e).__name__}: {e}"], None
    found["torch"] = f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})"
    if torch.__version__ < (2, 11):
        missing.append(f"torch {torch.__version__} is older than 2.11")
    if not torch.version.cuda:
        missing.append("torch is a CPU-only build: the CUDA kernels cannot be built")
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        props = torch.cuda.get_device_properties(0)
        found["GPU"] = f"{props.name}, sm_{major}{minor}, {props.total_memory / 2**30:.0f} GiB"
        arch = f"{major}{minor}"
    for dist in ("torchvision", "scikit-build-core", "pybind11", "pytest", "pytest-xdist", "pytest-timeout"):
        found[dist] = _version(dist)
        if found[dist] is None and dist in ("torchvision", "scikit-build-core", "pybind11", "pytest"):
            missing.append(f"{dist} is not installed")
    for tool, containing in (("nvcc", "release"), ("cmake", "version"), ("ninja", ""), ("compute-sanitizer", "")):
        path = _tool(tool)
        found[tool] = _first_line([path, "--version"], containing) if path else None
        if path is None and tool in ("nvcc", "cmake"):
            missing.append(f"{tool} is not on PATH")
    return found, missing, arch


class Check:
    """Runs the stages, each command's output in logs/, and collects the report's sections."""

    def __init__(self, work: str):
        self.work, self.logs, self.site = work, os.path.join(work, "logs"), os.path.join(work, "site")
        shutil.rmtree(self.logs, ignore_errors=True)
        shutil.rmtree(self.site, ignore_errors=True)
        os.makedirs(self.logs)
        self.stages, self.commands, self.sections = [], [], []
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def log(self, text: str) -> None:
        t = int(time.monotonic() - self.started)
        print(f"[gpu-check {t // 60}:{t % 60:02d}] {text}", flush=True)

    def run(self, cmd: list[str], log: str, deadline: float, stop=signal.SIGTERM, **kwargs) -> str:
        """Runs `cmd` (output to logs/`log`), stopping its whole process group at `deadline`
        (`stop` first: SIGINT lets pytest write its summary). Returns 'ok', 'timed out' or
        'exit status N'."""
        with self.lock:
            self.commands.append(shlex.join(cmd))
        with open(os.path.join(self.logs, log), "w") as out:
            child = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **kwargs
            )
            try:
                rc = child.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, stop)
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
                return "timed out"
        return "ok" if rc == 0 else f"exit status {rc}"

    def stage(self, name: str, body) -> bool:
        limit = int(os.environ.get(f"DETOPS_GPU_LIMIT_{name.upper()}", LIMITS[name]))
        self.log(f"{name}: start (limit {limit} s)")
        t0 = time.monotonic()
        result = body(t0 + limit)
        self.stages.append((name, result, int(time.monotonic() - t0), limit))
        self.log(f"{name}: {result}")
        return result == "ok"

    def excerpt(self, log: str, pattern: str = "", lines: int = 25) -> list[str]:
        """Lines of a log (those matching `pattern`, else the last ones) as a fenced block: the
        report may be the only file that comes back from a borrowed machine."""
        with open(os.path.join(self.logs, log), errors="replace") as f:
            text = f.read().splitlines()
        picked = [line for line in text if pattern and re.search(pattern, line)][:lines] or text[-lines:]
        return ["```", *(line[:300] for line in picked), "```"]


def build(check: Check, arch: str, deadline: float) -> str:
    env = dict(check.env, DETOPS_CUDA="ON", DETOPS_CUDA_ARCHS=arch, CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count()))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    # Every package builds against the tree's detops-core (CMake helper, headers): all at once.
    settings = [f"-Ccmake.define.detops_core_DIR={packages.path('core')}/src/detops_core/cmake"]
    cmakedir = subprocess.run([sys.executable, "-m", "pybind11", "--cmakedir"], capture_output=True, text=True)
    if cmakedir.returncode == 0:  # older pybind11 releases register no CMake entry point
        settings.append(f"-Ccmake.define.pybind11_DIR={cmakedir.stdout.strip()}")
    install = threading.Lock()
    rows = {}

    def one(pkg: str) -> str:
        # Installed as soon as built, so that a build stopped by the limit leaves the rest to test.
        t0, wheels = time.monotonic(), os.path.join(check.work, "wheels", pkg)
        shutil.rmtree(wheels, ignore_errors=True)
        cmd = [*pip, "wheel", "--no-build-isolation", "--no-deps", "--no-index", "-w", wheels, *settings]
        cmd += [f"-Cbuild-dir={os.path.join(check.work, 'cmake', pkg)}", packages.path(pkg)]
        result = check.run(cmd, f"build-{pkg}.log", deadline, env=env)
        if result == "ok":
            with install:
                wheel = [os.path.join(wheels, w) for w in os.listdir(wheels)]
                target = ["install", "--no-index", "--no-deps", "--no-compile", "--upgrade", "--target", check.site]
                result = check.run([*pip, *target, *wheel], f"install-{pkg}.log", deadline)
        cuda = glob.glob(os.path.join(packages.path(pkg), "csrc", "**", "*.cu"), recursive=True)
        library = os.path.join(check.site, packages.wheel_stem(pkg), "_C_cuda.so")
        if result == "ok" and cuda and not os.path.exists(library):
            result = "no _C_cuda.so: the CUDA kernels were not built"
        rows[pkg] = (result, int(time.monotonic() - t0))
        check.log(f"build {pkg}: {result}")
        return result

    order = packages.present()
    with concurrent.futures.ThreadPoolExecutor(len(order)) as pool:
        results = list(pool.map(one, order))
    kernels = "import torch, detops; print('ops without a CUDA kernel:', [n for n in torch._C._dispatch_get_all_op_names() if n.startswith('detops::') and not torch._C._dispatch_has_kernel_for_dispatch_key(n, 'CUDA')])"  # noqa: E501
    if all(r == "ok" for r in results):
        results.append(check.run([sys.executable, "-c", kernels], "kernels.log", deadline + 30, env=check.env))
    table = ["| package | result | time (s) |", "|---|---|---:|"]
    table += [
        f"| {p} | {rows[p][0] if p in rows else 'not built'} | {rows[p][1] if p in rows else ''} |" for p in order
    ]
    check.sections.append(("Build", [f"`DETOPS_CUDA_ARCHS={arch}`", "", *table]))
    for pkg, (result, _) in rows.items():
        if result != "ok":
            check.sections[-1][1].extend(["", f"{pkg}:", *check.excerpt(f"build-{pkg}.log", r"(?i)error")])
    if os.path.exists(os.path.join(check.logs, "kernels.log")):
        check.sections[-1][1].extend(["", *check.excerpt("kernels.log", lines=5)])
    return next((r for r in results if r != "ok"), "ok")


def test_counts(xml_path: str) -> list[str]:
    """The report's lines for pytest's JUnit XML: counts, failures, skip reasons."""
    counts, failures, skips = collections.Counter(), [], collections.Counter()
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "errors"
                failures.append(f"{case.get('classname')}::{case.get('name')}: {(child.get('message') or '')[:200]}")
            elif child.tag == "skipped":
                outcome = "skipped"
                skips[(child.get("message") or "no reason given")[:200]] += 1
        counts[outcome] += 1
    names = ("passed", "failed", "errors", "skipped")
    lines = [
        "| " + " | ".join(names) + " |",
        "|---:|---:|---:|---:|",
        "| " + " | ".join(str(counts[n]) for n in names) + " |",
    ]
    if failures:
        lines += ["", f"Failed ({len(failures)}, the first 40):", *(f"- `{f}`" for f in failures[:40])]
    if skips:
        lines += ["", "| skipped | reason |", "|---:|---|", *(f"| {n} | {r} |" for r, n in skips.most_common(40))]
    return lines


def tests(check: Check, deadline: float) -> str:
    xml = os.path.join(check.logs, "tests.xml")
    cmd = [sys.executable, "-m", "pytest", "--import-mode=importlib", "-q", "-ra", f"--junitxml={xml}"]
    workers = min(8, (os.cpu_count() or 2) // 2)
    env = check.env
    if _version("pytest-xdist") and workers > 1:
        # Two CPU threads per worker keep the cores busy without oversubscribing them.
        cmd += ["-n", str(workers)]
        env = dict(env, OMP_NUM_THREADS="2")
    if _version("pytest-timeout"):
        cmd += ["--timeout=120"]
    cmd += [packages.tests_dir(p) for p in packages.present() if packages.tests_dir(p)]
    result = check.run(cmd, "tests.log", deadline, stop=signal.SIGINT, cwd=test.CWD, env=env)
    if os.path.exists(xml):
        lines = test_counts(xml)
    else:
        lines = ["No JUnit XML: the end of the output:", *check.excerpt("tests.log", lines=15)]
    if result == "timed out":
        lines = ["Stopped at the time limit: these are the tests that finished.", "", *lines]
    check.sections.append(("Tests", lines))
    return result


def sanitizer(check: Check, deadline: float) -> str:
    tool = _tool("compute-sanitizer")
    if tool is None:
        check.sections.append(("compute-sanitizer", ["Not run: compute-sanitizer is not on PATH."]))
        return "not run: no compute-sanitizer"
    # Without the caching allocator memcheck sees each tensor's own bounds, not a pool's.
    env = dict(check.env, PYTORCH_NO_CUDA_MEMORY_CACHING="1")

    def one(job) -> tuple:
        (pkg, (test_file, select)), kind = job
        log = f"sanitizer-{pkg}-{kind}.log"
        cmd = [tool, "--tool", kind, "--error-exitcode", str(SANITIZER_ERRORS), "--print-limit", "20"]
        cmd += [sys.executable, "-m", "pytest", "--import-mode=importlib", "-q", "-p", "no:cacheprovider"]
        cmd += [os.path.join(packages.tests_dir(pkg), test_file), "-k", select]
        result = check.run(cmd, log, deadline - 5, cwd=test.CWD, env=env)
        with open(os.path.join(check.logs, log), errors="replace") as f:
            text = f.read()
        summary = "; ".join(
            re.findall(r"(?:ERROR|RACECHECK) SUMMARY: .*", text)[-1:] + re.findall(r"\d+ \w+.* in [\d.]+s", text)[-1:]
        )
        if result == f"exit status {SANITIZER_ERRORS}":
            result = "ERRORS"
        elif result == "ok":
            result = "clean" if re.search(r"\d+ passed", text) else "nothing ran"
        return pkg, kind, f"`{test_file} -k '{select}'`", result, summary, log

    jobs = [(item, kind) for item in SANITIZE.items() for kind in ("memcheck", "racecheck")]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        runs = list(pool.map(one, jobs))
    lines = ["| package | tests | tool | result | summary |", "|---|---|---|---|---|"]
    lines += [f"| {p} | {t} | {k} | {r} | {s} |" for p, k, t, r, s, _ in runs]
    for pkg, kind, _, result, _, log in runs:
        if result not in ("clean", "nothing ran"):
            lines += ["", f"{pkg} {kind}:", *check.excerpt(log, "^=+ ")]
    check.sections.append(("compute-sanitizer", lines))
    verdicts = collections.Counter(r[3] for r in runs if r[3] != "clean")
    return ", ".join(f"{n} of {len(runs)} runs {verdict}" for verdict, n in verdicts.items()) or "ok"


def bench(check: Check, deadline: float) -> str:
    table = os.path.join(check.logs, "bench.md")
    cmd = [sys.executable, os.path.join(test.CWD, "bench.py"), "--device", "cuda", "--seconds", "0.25"]
    result = check.run([*cmd, "--keep-going", "--markdown", table], "bench.log", deadline, env=check.env)
    if os.path.exists(table):
        with open(table) as f:
            lines = [*f.read().splitlines(), "", "A speed-up above 1 means detops is faster."]
    else:
        lines = ["No results: the end of the output:", *check.excerpt("bench.log", lines=15)]
    check.sections.append(("Benchmark: detops against torchvision's CUDA kernels", lines))
    return result


def report(check: Check, path: str, found: dict, problems: list[str]) -> None:
    problems = problems + [f"{name}: {result}" for name, result, _, _ in check.stages if result != "ok"]
    lines = ["# detops GPU check", "", "**PASSED**" if not problems else "**FAILED**: " + "; ".join(problems), ""]
    lines += [
        f"Written {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}.",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {key} | {value or '**not found**'} |" for key, value in found.items()]
    lines += ["", "| stage | result | time (s) | limit (s) |", "|---|---|---:|---:|"]
    lines += [f"| {name} | {result} | {seconds} | {limit} |" for name, result, seconds, limit in check.stages]
    for title, body in check.sections:
        lines += ["", f"## {title}", "", *body]
    lines += ["", "## Commands", "", "```", *check.commands, "```", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    with tarfile.open(re.sub(r"\.md$", "", path) + "-logs.tar.gz", "w:gz") as tar:
        tar.add(check.logs, arcname="logs")
    check.log(f"report: {path} ({lines[2]})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", default="gpu-report.md")
    parser.add_argument("--allow-no-gpu", action="store_true", help="run the stages where there is no GPU")
    args = parser.parse_args()
    report_path = os.path.abspath(args.report)
    check = Check(os.environ.get("DETOPS_GPU_CHECK_WORK", os.path.join(packages.ROOT, "build", "gpu-check")))
    found, missing, arch = probe()
    commit = subprocess.run(
        ["git", "-C", packages.ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    found["detops commit"] = commit.stdout.strip() or None
    for key, value in found.items():
        check.log(f"{key}: {value}")
    if arch is None and not args.allow_no_gpu:
        report(check, report_path, found, ["no NVIDIA GPU found: nothing was built"])
        return NO_GPU
    if missing:
        report(check, report_path, found, [f"missing: {m}" for m in missing])
        return MISSING
    check.env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [check.site, os.environ.get("PYTHONPATH")])))
    check.env["PYTHONUNBUFFERED"] = "1"
    check.stage("build", lambda deadline: build(check, os.environ.get("DETOPS_CUDA_ARCHS", arch or "90"), deadline))
    if os.path.isdir(os.path.join(check.site, "detops_core")):  # what did build can be tested
        check.stage("tests", lambda deadline: tests(check, deadline))
        check.stage("sanitizer", lambda deadline: sanitizer(check, deadline))
        check.stage("bench", lambda deadline: bench(check, deadline))
    report(check, report_path, found, [])
    return 0 if all(result == "ok" for _, result, _, _ in check.stages) else 1


if __name__ == "__main__":
    sys.exit(main())
