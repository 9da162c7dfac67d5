"""`nox -s gpu`, on a machine with an NVIDIA GPU: build every package for that GPU (into
build/gpu-check/site, put first on PYTHONPATH), run the whole suite, compute-sanitizer
(memcheck, racecheck) on one op's CUDA tests per package, the benchmark against torchvision's
CUDA kernels, and write one markdown report, every command's output in
<report stem>-logs.tar.gz beside it. Installs and downloads nothing.

    python tools/gpu_check.py [--report gpu-report.md] [--allow-no-gpu]

Each stage runs under coreutils' `timeout` (LIMITS, in seconds; DETOPS_GPU_LIMIT_<STAGE>
overrides one), so the report is always written. --allow-no-gpu runs the stages without a GPU.
Exit status: 0 all passed; 1 a stage failed or timed out; 3 no GPU; 4 a prerequisite missing.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import glob
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time

import build
from build import PACKAGES, ROOT

# Per package: a small test file and a -k expression picking one op's CUDA cases, checked
# against the reference oracle only (torchvision's kernels are not ours to check).
SANITIZE = {
    "nms": ("test_differential.py", "cuda and test_nms_matches_oracle and reference"),
    "roi": ("test_roi_differential.py", "cuda and roi_align and not ps_roi_align and not torchvision"),
    "deform": ("test_devices.py", "cuda"),
    "deform_attn": ("test_devices.py", "cuda"),
    "fpn": ("test_upsample_add.py", "cuda"),
    "losses": ("test_box_iou_loss.py", "cuda"),
}
LIMITS = {"build": 120, "tests": 160, "sanitizer": 70, "bench": 80}
SANITIZER_ERRORS = 86  # compute-sanitizer's exit status on findings, apart from pytest's 0-5
NO_GPU, MISSING = 3, 4
VERSIONS = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in importlib.metadata.distributions()}


def _tool(name: str) -> str | None:
    # The CUDA toolkit's tools are often installed off PATH.
    return shutil.which(name) or shutil.which(name, path=f"{os.environ.get('CUDA_HOME', '/usr/local/cuda')}/bin")


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
        props = torch.cuda.get_device_properties(0)
        arch = f"{props.major}{props.minor}"
        found["GPU"] = f"{props.name}, sm_{arch}, {props.total_memory / 2**30:.0f} GiB"
    for dist in ("torchvision", "scikit-build-core", "pybind11", "pytest", "pytest-xdist", "pytest-timeout"):
        found[dist] = VERSIONS.get(dist)
        if found[dist] is None and dist in ("torchvision", "scikit-build-core", "pybind11", "pytest"):
            missing.append(f"{dist} is not installed")
    for tool, containing in (("nvcc", "release"), ("cmake", "version"), ("ninja", ""), ("compute-sanitizer", "")):
        path = _tool(tool)
        out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout.splitlines() if path else []
        found[tool] = next((line.strip() for line in out if containing in line), None) if path else None
        if path is None and tool in ("nvcc", "cmake"):
            missing.append(f"{tool} is not on PATH")
    return found, missing, arch


class Check:
    """Runs the stages, each command's output in logs/, and collects the report's sections."""

    def __init__(self, work: str):
        self.work, self.logs, self.site = work, os.path.join(work, "logs"), os.path.join(work, "site")
        for folder in (self.logs, self.site, os.path.join(work, "wheels")):
            shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(self.logs)
        self.stages, self.commands, self.sections = [], [], []
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.site, os.environ.get("PYTHONPATH")]))

    def run(self, cmd: list[str], log: str, limit: float, signal: str = "TERM", **kwargs) -> str:
        """Runs `cmd` (output to logs/`log`) under `timeout`, which stops its process group after
        `limit` s (`signal` first: INT lets pytest write its summary): 'ok', 'timed out' or 'exit status N'."""
        self.commands.append(shlex.join(cmd))
        timed = ["timeout", "-s", signal, "-k", "15", str(max(1, int(limit))), *cmd]
        with open(os.path.join(self.logs, log), "w") as out:
            rc = subprocess.run(timed, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)
        rc = rc.returncode
        return "ok" if rc == 0 else "timed out" if rc in (124, 137) else f"exit status {rc}"

    def stage(self, name: str, body) -> None:
        limit = int(os.environ.get(f"DETOPS_GPU_LIMIT_{name.upper()}", LIMITS[name]))
        print(f"[gpu-check] {name}: start (limit {limit} s)", flush=True)
        t0 = time.monotonic()
        result = body(limit)
        self.stages.append((name, result, int(time.monotonic() - t0), limit))
        print(f"[gpu-check] {name}: {result}", flush=True)

    def excerpt(self, log: str, pattern: str = "", lines: int = 25) -> list[str]:
        """The lines of a log matching `pattern` (else its last ones) as a fenced block for the report."""
        text = open(os.path.join(self.logs, log), errors="replace").read().splitlines()
        picked = [line for line in text if pattern and re.search(pattern, line)][:lines] or text[-lines:]
        return ["```", *(line[:300] for line in picked), "```"]


def build_stage(check: Check, arch: str, limit: float) -> str:
    env = dict(check.env, DETOPS_CUDA="ON", DETOPS_CUDA_ARCHS=arch, CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count()))
    wheels, t0 = os.path.join(check.work, "wheels"), time.monotonic()
    settings = ["--no-index", "-Cbuild-dir=build/gpu-check/{wheel_tag}"]  # in each package's folder
    cmakedir = subprocess.run([sys.executable, "-m", "pybind11", "--cmakedir"], capture_output=True, text=True)
    if cmakedir.returncode == 0:  # older pybind11 releases register no CMake entry point
        settings.append(f"-Ccmake.define.pybind11_DIR={cmakedir.stdout.strip()}")

    def one(pkg: str) -> str:  # all at once; what is built by the limit gets installed and tested
        return check.run(
            build.wheel_command(sys.executable, [pkg], wheels, *settings), f"build-{pkg}.log", limit, env=env
        )

    with concurrent.futures.ThreadPoolExecutor(len(PACKAGES)) as pool:
        results = dict(zip(PACKAGES, pool.map(one, PACKAGES)))
    install = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--target"]
    built = glob.glob(os.path.join(wheels, "*.whl"))
    # Whatever was built is installed (a minute at least), so that the stages after test it.
    left = max(60, limit - (time.monotonic() - t0))
    results["install"] = check.run([*install, check.site, *built], "install.log", left) if built else "nothing built"
    result = next((f"{step}: {r}" for step, r in results.items() if r != "ok"), "ok")
    lines = [f"`DETOPS_CUDA_ARCHS={arch}`", "", "| step | result |", "|---|---|"]
    lines += [f"| {step} | {r} |" for step, r in results.items()]
    for pkg in (p for p in PACKAGES if results[p] != "ok"):
        lines += ["", f"{pkg}:", *check.excerpt(f"build-{pkg}.log", r"(?i)error")]
    if result == "ok":
        # Fails if an op has no CUDA kernel: a package built without its _C_cuda.so, or one not loaded.
        kernels = "import sys, torch, detops; names = torch._C._dispatch_get_all_op_names(); missing = [n for n in names if n.startswith('detops::') and not torch._C._dispatch_has_kernel_for_dispatch_key(n, 'CUDA')]; print('ops without a CUDA kernel:', missing); sys.exit(bool(missing))"  # noqa: E501
        result = check.run([sys.executable, "-c", kernels], "kernels.log", 60, env=check.env)
        lines += ["", *check.excerpt("kernels.log", lines=5)]
    check.sections.append(("Build", lines))
    return result


def tests(check: Check, limit: float) -> str:
    cmd = [sys.executable, "-m", "pytest", "--import-mode=importlib", "-q", "-rfEs"]
    workers, env = min(8, (os.cpu_count() or 2) // 2), check.env
    if VERSIONS.get("pytest-xdist") and workers > 1:
        # Two CPU threads per worker keep the cores busy without oversubscribing them.
        cmd += ["-n", str(workers)]
        env = dict(env, OMP_NUM_THREADS="2")
    if VERSIONS.get("pytest-timeout"):
        cmd += ["--timeout=120"]
    result = check.run([*cmd, *build.tests_dirs(PACKAGES)], "tests.log", limit, "INT", cwd=build.TESTS_CWD, env=env)
    # pytest's own short summary: failures, errors, skip reasons with counts, the totals.
    lines = check.excerpt("tests.log", r"^(FAILED|ERROR|SKIPPED) |\d+ (passed|failed|skipped|errors?)\b.* in ", 80)
    if result == "timed out":
        lines = ["Stopped at the time limit: the summary covers the tests that finished.", "", *lines]
    check.sections.append(("Tests", lines))
    return result


def sanitizer(check: Check, limit: float) -> str:
    tool = _tool("compute-sanitizer")
    if tool is None:
        check.sections.append(("compute-sanitizer", ["Not run: compute-sanitizer is not on PATH."]))
        return "not run: no compute-sanitizer"
    # Without the caching allocator memcheck sees each tensor's own bounds, not a pool's.
    env = dict(check.env, PYTORCH_NO_CUDA_MEMORY_CACHING="1")

    def one(job) -> tuple:
        (pkg, (test_file, select)), kind = job
        log, tests = f"sanitizer-{pkg}-{kind}.log", os.path.join(ROOT, "packages", pkg, "tests", test_file)
        cmd = [tool, "--tool", kind, "--error-exitcode", str(SANITIZER_ERRORS), "--print-limit", "20", sys.executable]
        cmd += ["-m", "pytest", "--import-mode=importlib", "-q", "-p", "no:cacheprovider", tests, "-k", select]
        result = check.run(cmd, log, limit - 5, cwd=build.TESTS_CWD, env=env)
        text = open(os.path.join(check.logs, log), errors="replace").read()
        summary = "; ".join(re.findall(r"(?:ERROR|RACECHECK) SUMMARY: .*|\d+ \w+.* in [\d.]+s", text)[-2:])
        ran = "clean" if re.search(r"\d+ passed", text) else "nothing ran"
        result = {"ok": ran, f"exit status {SANITIZER_ERRORS}": "ERRORS"}.get(result, result)
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
    bad = [r[3] for r in runs if r[3] != "clean"]
    return ", ".join(f"{bad.count(v)} of {len(runs)} runs {v}" for v in dict.fromkeys(bad)) or "ok"


def bench(check: Check, limit: float) -> str:
    table = os.path.join(check.logs, "bench.md")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "bench.py"), "--device", "cuda", "--seconds", "0.25"]
    result = check.run([*cmd, "--keep-going", "--markdown", table], "bench.log", limit, env=check.env)
    if os.path.exists(table):
        lines = [*open(table).read().splitlines(), "", "A speed-up above 1 means detops is faster."]
    else:
        lines = ["No results: the end of the output:", *check.excerpt("bench.log", lines=15)]
    check.sections.append(("Benchmark: detops against torchvision's CUDA kernels", lines))
    return result


def report(check: Check, path: str, found: dict, problems: list[str]) -> None:
    problems = problems + [f"{name}: {result}" for name, result, _, _ in check.stages if result != "ok"]
    lines = ["# detops GPU check", "", "**PASSED**" if not problems else "**FAILED**: " + "; ".join(problems), ""]
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    lines += [f"Written {now}.", "", "| | |", "|---|---|"]
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
    print(f"[gpu-check] report: {path} ({lines[2]})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", default="gpu-report.md")
    parser.add_argument("--allow-no-gpu", action="store_true", help="run the stages where there is no GPU")
    args = parser.parse_args()
    report_path = os.path.abspath(args.report)
    check = Check(os.environ.get("DETOPS_GPU_CHECK_WORK", os.path.join(ROOT, "build", "gpu-check")))
    found, missing, arch = probe()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    found["detops commit"] = commit.stdout.strip() or None
    for key, value in found.items():
        print(f"[gpu-check] {key}: {value}", flush=True)
    if arch is None and not args.allow_no_gpu:
        report(check, report_path, found, ["no NVIDIA GPU found: nothing was built"])
        return NO_GPU
    if missing:
        report(check, report_path, found, [f"missing: {m}" for m in missing])
        return MISSING
    check.stage("build", lambda limit: build_stage(check, os.environ.get("DETOPS_CUDA_ARCHS", arch or "90"), limit))
    if os.path.isdir(os.path.join(check.site, "detops_core")):  # what did build can be tested
        for name, body in (("tests", tests), ("sanitizer", sanitizer), ("bench", bench)):
            check.stage(name, lambda limit, body=body: body(check, limit))
    report(check, report_path, found, [])
    return 0 if all(result == "ok" for _, result, _, _ in check.stages) else 1


if __name__ == "__main__":
    sys.exit(main())
