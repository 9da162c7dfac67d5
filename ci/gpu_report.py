"""The Python half of ci/gpu_check.sh: looks at the machine, lists the CUDA kernels the
build registered, and writes the markdown report from what the stages left behind.

    python ci/gpu_report.py probe --json env.json --shell env.sh   # exit 0, 3 (no GPU), 4
    python ci/gpu_report.py kernels --json kernels.json --site DIR  # after the build
    python ci/gpu_report.py render --work DIR --out gpu-report.md --site DIR  # exit 0 passed, 1 not
    python ci/gpu_report.py self-test                               # the renderer, on made-up stage results

Only the standard library at module level: `probe` must say clearly what is missing on a
machine without torch, and `render` must write a report whatever broke.

The stage results in DIR (written by ci/gpu_check.sh):
    env.json         probe's findings
    stages.tsv       stage, status (ok | failed | timeout | skipped), exit status, seconds, limit, note
    commands.tsv     stage, command line
    build-PKG.rc     exit status, seconds (absent: the build did not finish); build-PKG.log
    kernels.json     kernels' findings
    tests.xml        pytest's JUnit XML; tests.log its output
    sanitizer.tsv    package, tool, test file, -k expression, exit status, seconds, log file
                     (exit status `nofile`: no such test file)
    bench.json       ci/bench.py --json
"""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import packages  # noqa: E402

EXIT_NO_GPU = 3
EXIT_MISSING = 4
# compute-sanitizer's exit status when it found errors (gpu_check.sh passes it as
# --error-exitcode): distinct from pytest's own statuses 0 to 5.
SANITIZER_ERROR_EXIT = 86
MIN_TORCH = (2, 11)


def cuda_libraries(site: str, root: str = packages.ROOT) -> dict:
    """package -> whether `site` holds its _C_cuda.so, for each package with .cu sources."""
    found = {}
    for csrc in sorted(glob.glob(os.path.join(root, "packages", "*", "csrc"))):
        pkg = os.path.basename(os.path.dirname(csrc))
        if glob.glob(os.path.join(csrc, "**", "*.cu"), recursive=True):
            name = packages.wheel_stem(pkg)
            found[pkg] = os.path.exists(os.path.join(site, name, "_C_cuda.so"))
    return found


def _package_order(pkg: str) -> int:
    order = packages.present()
    return order.index(pkg) if pkg in order else len(order)


# ---------------------------------------------------------------------------------------
# probe


def _first_line(cmd: list[str], pick_last: bool = False, containing: str = "") -> str | None:
    if not shutil.which(cmd[0]) and not os.path.isabs(cmd[0]):
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({cmd[0]} failed: {e})"
    lines = [line.strip() for line in (done.stdout or done.stderr).splitlines() if line.strip()]
    if not lines:
        return f"({cmd[0]} printed nothing, exit status {done.returncode})"
    lines = [line for line in lines if containing in line] or lines
    return lines[-1] if pick_last else lines[0]


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _git(root: str) -> str | None:
    if not shutil.which("git"):
        return None
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"], capture_output=True
        )
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def probe(args) -> int:
    # Filled in this order, which is the order they are printed in.
    env: dict = dict.fromkeys(["started", "gpu", "nvidia_smi", "torch", "torchvision", "nvcc", "python", "cpu"])
    env["started"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    env["python"] = f"{sys.version.split()[0]} ({sys.executable})"
    env["cpu"] = f"{_cpu_model()}, {os.cpu_count()} cores"
    env["commit"] = _git(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    missing, warnings, no_gpu = [], [], []

    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            done = subprocess.run(
                [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            gpus = [line.strip() for line in done.stdout.splitlines() if line.strip()]
            env["nvidia_smi"] = gpus or [f"(no GPU listed; exit status {done.returncode}: {done.stderr.strip()})"]
            if not gpus:
                no_gpu.append(f"nvidia-smi lists no GPU ({done.stderr.strip() or 'empty output'})")
        except (OSError, subprocess.TimeoutExpired) as e:
            no_gpu.append(f"nvidia-smi failed: {e}")
    else:
        no_gpu.append("nvidia-smi is not on PATH")

    try:
        import torch
    except Exception as e:  # a broken install raises more than ImportError
        torch = None
        missing.append(f"torch cannot be imported by {sys.executable}: {type(e).__name__}: {e}")
        no_gpu.append(f"torch cannot be imported by {sys.executable} to ask CUDA")
    if torch is not None:
        env["torch"] = f"{torch.__version__} (CUDA {torch.version.cuda or 'none: a CPU-only build'})"
        version = tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2])
        if version < MIN_TORCH:
            missing.append(f"torch {torch.__version__} is older than {'.'.join(map(str, MIN_TORCH))}")
        if not torch.version.cuda:
            missing.append(f"torch {torch.__version__} is a CPU-only build: the CUDA kernels cannot be built or run")
        try:
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        except Exception as e:
            count = 0
            no_gpu.append(f"torch.cuda raised {type(e).__name__}: {e}")
        if count:
            props = torch.cuda.get_device_properties(0)
            major, minor = torch.cuda.get_device_capability(0)
            env["gpu"] = (
                f"{props.name}, compute capability {major}.{minor}, {props.total_memory / 2**30:.0f} GiB, "
                f"{props.multi_processor_count} multiprocessors" + (f" (GPU 0 of {count})" if count > 1 else "")
            )
            env["arch"] = f"{major}{minor}"
        else:
            no_gpu.append(
                f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}) sees no CUDA device "
                "(torch.cuda.is_available() is False)"
            )

    env["torchvision"] = _dist_version("torchvision")
    if env["torchvision"] is None:
        missing.append("torchvision is not installed (the reference the tests and the benchmark compare against)")

    env["nvcc"] = _first_line(["nvcc", "--version"], containing="release")
    if env["nvcc"] is None:
        missing.append("nvcc is not on PATH (nor in /usr/local/cuda/bin)")
    elif torch is not None and torch.version.cuda:
        release = re.search(r"release (\d+)", env["nvcc"])
        if release and release.group(1) != torch.version.cuda.split(".")[0]:
            warnings.append(f"nvcc ({env['nvcc']}) and torch's CUDA {torch.version.cuda} differ in major version")
    env["cmake"] = _first_line(["cmake", "--version"])
    if env["cmake"] is None:
        missing.append("cmake is not on PATH")
    env["ninja"] = _first_line(["ninja", "--version"])
    if env["ninja"] is None:
        warnings.append("ninja is not on PATH: CMake falls back to make")
    for dist in ("scikit-build-core", "pybind11", "pip"):
        env[dist] = _dist_version(dist)
        if env[dist] is None:
            missing.append(f"{dist} is not installed (the packages build without isolation, nothing is downloaded)")

    tools = {
        "pytest": "the test and sanitizer stages are skipped",
        "pytest-xdist": "the tests run in one process",
        "pytest-timeout": "no per-test time limit (the stage limit still holds)",
        "hypothesis": "the property and fuzz tests cannot run",
        "numpy": "tests that use numpy cannot run",
    }
    for dist, consequence in tools.items():
        env[dist] = _dist_version(dist)
        if env[dist] is None:
            warnings.append(f"{dist} is not installed: {consequence}")
    sanitizer = os.environ.get("DETOPS_COMPUTE_SANITIZER") or shutil.which("compute-sanitizer")
    env["compute-sanitizer"] = _first_line([sanitizer, "--version"], pick_last=True) if sanitizer else None
    if env["compute-sanitizer"] is None:
        warnings.append("compute-sanitizer is not on PATH (nor in /usr/local/cuda/bin): the sanitizer stage is skipped")

    env["missing"], env["warnings"] = missing, warnings
    gpu_found = "arch" in env or (torch is None and "nvidia_smi" in env and not no_gpu)
    env["no_gpu"] = [] if gpu_found else no_gpu

    width = max(len(k) for k in env)
    for key, value in env.items():
        if key not in ("missing", "warnings", "no_gpu"):
            print(f"  {key:{width}s}  {value if value is not None else '-'}")
    for w in warnings:
        print(f"  warning: {w}")
    status = 0
    if not gpu_found:
        print("no NVIDIA GPU found: " + "; ".join(no_gpu), file=sys.stderr)
        status = EXIT_NO_GPU
    elif missing:
        for m in missing:
            print(f"missing: {m}", file=sys.stderr)
        status = EXIT_MISSING
    env["exit"] = status
    _write_json(args.json, env)
    if args.shell:
        with open(args.shell, "w") as f:
            f.write(f"DETOPS_GPU_ARCH={env.get('arch', '')}\n")
            for dist in ("pytest", "pytest-xdist", "pytest-timeout"):
                f.write(f"HAVE_{dist.upper().replace('-', '_')}={1 if env[dist] else 0}\n")
    return status


def _write_json(path: str, data) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


# ---------------------------------------------------------------------------------------
# kernels


def kernels(args) -> int:
    import importlib

    import torch

    result: dict = {"imports": {}, "cuda": [], "no_cuda": []}
    site = os.path.realpath(args.site) if args.site else None
    for module in map(packages.wheel_stem, packages.present()):
        try:
            where = os.path.dirname(importlib.import_module(module).__file__)
        except Exception as e:
            result["imports"][module] = f"FAILED: {type(e).__name__}: {e}"
            continue
        if site and not os.path.realpath(where).startswith(site + os.sep):
            # An older install in the environment answered instead of this build.
            where = f"FAILED: not built here: imported from {where}"
        result["imports"][module] = where
    for name in sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("detops::")):
        has = torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")
        result["cuda" if has else "no_cuda"].append(name)
    libraries = cuda_libraries(args.site) if args.site else {}
    result["missing_cuda_libraries"] = [pkg for pkg, found in libraries.items() if not found]
    for module, where in result["imports"].items():
        print(f"  import {module}: {where}")
    if result["missing_cuda_libraries"]:
        print(f"  no _C_cuda.so (CUDA kernels not built) in: {', '.join(result['missing_cuda_libraries'])}")
    print(f"  {len(result['cuda'])} detops ops have a CUDA kernel; without one: {', '.join(result['no_cuda']) or '-'}")
    _write_json(args.json, result)
    failed = [m for m, where in result["imports"].items() if where.startswith("FAILED")]
    return 1 if failed or result["missing_cuda_libraries"] or not result["cuda"] else 0


# ---------------------------------------------------------------------------------------
# render


def _read_tsv(path: str, width: int) -> list[list[str]]:
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            cells = line.rstrip("\n").split("\t")
            rows.append(cells + [""] * (width - len(cells)))
    return rows


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


_EXCERPT_LINES = 25


def _excerpt(path: str, first: int = 0, last: int = 0, pattern: str = "") -> list[str]:
    """Some lines of a log (those matching `pattern`, when any does) as a fenced block: the
    report may be the only file that comes back from a borrowed machine."""
    try:
        with open(path, errors="replace") as f:
            text = f.read().splitlines()
    except OSError:
        return [f"(no {os.path.basename(path)})"]
    if pattern:
        text = [line for line in text if re.search(pattern, line)] or text
    text = text[:first] if first else text[-last:]
    return ["```", *(line[:300] for line in text), "```"]


def test_counts(work: str) -> dict:
    """Outcome counts of the test stage: from the JUnit XML when pytest wrote it, else from
    pytest's summary line; `source` says which, and is None when neither exists."""
    counts = collections.Counter()
    failures, skips = [], collections.Counter()
    xml_path = os.path.join(work, "tests.xml")
    if os.path.exists(xml_path):
        try:
            root = ET.parse(xml_path).getroot()
        except ET.ParseError:
            root = None
        if root is not None:
            for case in root.iter("testcase"):
                name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
                outcome = "passed"
                for child in case:
                    if child.tag in ("failure", "error"):
                        outcome = "failed" if child.tag == "failure" else "errors"
                        message = (child.get("message") or child.tag).splitlines() or [child.tag]
                        failures.append(f"{name}: {message[0][:200]}")
                    elif child.tag == "skipped":
                        is_xfail = child.get("type") == "pytest.xfail"
                        outcome = "xfailed" if is_xfail else "skipped"
                        if not is_xfail:
                            skips[(child.get("message") or "no reason given")[:200]] += 1
                counts[outcome] += 1
            return _counted("JUnit XML", counts, failures, skips)
    log = os.path.join(work, "tests.log")
    if os.path.exists(log):
        with open(log, errors="replace") as f:
            text = f.read()
        summaries = [
            line for line in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|errors?)\b.* in [\d.]+s", line)
        ]
        if summaries:
            for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", summaries[-1]):
                counts["errors" if word.startswith("error") else word] += int(number)
            for line in text.splitlines():
                m = re.match(r"SKIPPED \[(\d+)\] [^:]+:\d+: (.*)", line)
                if m:
                    skips[m.group(2)[:200]] += int(m.group(1))
                elif line.startswith(("FAILED ", "ERROR ")):
                    failures.append(line.split(" ", 1)[1][:250])
            return _counted("pytest's summary line", counts, failures, skips)
    return _counted(None, counts, failures, skips)


def _counted(source: str | None, counts: collections.Counter, failures: list, skips: collections.Counter) -> dict:
    return {"source": source, "counts": dict(counts), "failures": failures, "skips": skips.most_common()}


def sanitizer_verdict(rc: str, log_text: str) -> tuple[str, str]:
    """(result, what compute-sanitizer and pytest summed up) of one sanitizer run; result is
    one of clean, ERRORS, tests failed, nothing ran, timed out, tool failed, no test file."""
    summary = ""
    for pattern in (r"=+ (ERROR SUMMARY: .*)", r"=+ (RACECHECK SUMMARY: .*)"):
        found = re.findall(pattern, log_text)
        if found:
            summary = found[-1].strip()
    errors = [int(n) for n in re.findall(r"(\d+) errors?", summary)]
    tests = [line.strip() for line in log_text.splitlines() if re.search(r"\d+ \w+.* in [\d.]+s", line)]
    pytest = tests[-1].strip("= ") if tests else ""
    ran = re.search(r"(\d+) (passed|failed)", pytest)
    both = "; ".join(p for p in (summary, f"pytest: {pytest}" if pytest else "") if p)
    if rc == "nofile":
        return "no test file", log_text.strip()[:300]
    if rc in ("124", "137"):
        return "timed out", both or "(stopped by the time limit before any summary)"
    if rc == str(SANITIZER_ERROR_EXIT) or any(errors):
        return "ERRORS", both
    if not summary:
        tail = [line for line in log_text.splitlines() if line.strip()][-3:]
        return "tool failed", " / ".join(tail)[:300] or "(no output)"
    if rc == "5" or not ran:
        # Every selected test skipped, or none selected: the tool checked no kernel.
        return "nothing ran", both
    if rc != "0":
        return "tests failed", f"{both} (pytest exit status {rc})"
    return "clean", both


def render(work: str, out: str, site: str | None = None, root: str = packages.ROOT) -> int:
    env = _read_json(os.path.join(work, "env.json")) or {}
    stages = _read_tsv(os.path.join(work, "stages.tsv"), 6)
    lines = ["# detops GPU check", ""]
    finished = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    total = sum(int(s[3]) for s in stages if s[3].isdigit())

    sanitizer_rows = []
    for pkg, tool, test_file, kexpr, rc, seconds, log in _read_tsv(os.path.join(work, "sanitizer.tsv"), 7):
        try:
            with open(os.path.join(work, log), errors="replace") as f:
                text = f.read()
        except OSError:
            text = ""
        result, summary = sanitizer_verdict(rc, text)
        sanitizer_rows.append((pkg, f"{test_file} -k '{kexpr}'", tool, result, summary, seconds, log))
    sanitizer_rows.sort(key=lambda r: (_package_order(r[0]), r[0], r[2]))
    counted = collections.Counter(r[3] for r in sanitizer_rows)
    sanitizer_note = ", ".join(f"{n} {result}" for result, n in sorted(counted.items(), key=lambda c: (-c[1], c[0])))
    tests = test_counts(work)
    bench = _read_json(os.path.join(work, "bench.json"))

    problems = []
    for name, status, _rc, _seconds, _limit, note in stages:
        if status != "ok":
            problems.append(f"{name} {status}" + (f" ({note})" if note else ""))
    # The sanitizer stage exits 0 when every run finished: its verdicts are read here.
    if any(r[3] != "clean" for r in sanitizer_rows):
        problems.append("sanitizer: " + ", ".join(f"{r[0]} {r[2]} {r[3]}" for r in sanitizer_rows if r[3] != "clean"))
    if env.get("exit") == EXIT_NO_GPU:
        verdict = "NO GPU: nothing was built or run"
    elif env.get("exit") == EXIT_MISSING:
        verdict = "NOT RUN: a prerequisite is missing"
    elif not stages:
        verdict = "NOT RUN"
    else:
        verdict = "PASSED" if not problems else "FAILED"
    lines += [
        f"**{verdict}**" + (": " + "; ".join(problems) if problems and verdict == "FAILED" else ""),
        "",
        f"Started {env.get('started', '?')}, report written {finished}; the stages took {total} s.",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
    ]
    # Labels of the probe's keys; the versions of tools are under their own names.
    tools = ["torch", "torchvision", "nvcc", "cmake", "ninja", "scikit-build-core", "pybind11", "pytest"]
    tools += ["pytest-xdist", "pytest-timeout", "hypothesis", "numpy", "compute-sanitizer"]
    keys = [("GPU", "gpu"), ("nvidia-smi", "nvidia_smi"), ("CPU", "cpu"), ("Python", "python")]
    keys += [(t, t) for t in tools] + [("detops commit", "commit")]
    for label, key in keys:
        value = env.get(key)
        if isinstance(value, list):
            value = "; ".join(value)
        lines.append(f"| {label} | {_cell(value) if value else '**not found**'} |")
    lines.append("")
    for title, key in (("No GPU", "no_gpu"), ("Missing", "missing"), ("Warning", "warnings")):
        for item in env.get(key) or []:
            lines.append(f"- {title}: {_cell(item)}")
    if any(env.get(k) for k in ("no_gpu", "missing", "warnings")):
        lines.append("")

    lines += ["## Stages", "", "| stage | result | time (s) | limit (s) | note |", "|---|---|---:|---:|---|"]
    for name, status, rc, seconds, limit, note in stages:
        if name == "sanitizer" and sanitizer_rows:
            note = "; ".join(n for n in (note, f"{len(sanitizer_rows)} runs: {sanitizer_note}") if n)
        shown = {"ok": "ok", "timeout": "**TIMED OUT**", "failed": f"**FAILED** (exit status {rc})"}.get(status, status)
        if name == "probe" and rc == str(EXIT_NO_GPU):
            shown = f"**no NVIDIA GPU found** (exit status {rc})"
        elif name == "probe" and rc == str(EXIT_MISSING):
            shown = f"**a prerequisite is missing** (exit status {rc})"
        lines.append(f"| {name} | {shown} | {seconds} | {limit} | {_cell(note)} |")
    if not stages:
        lines.append("| (none ran) | | | | |")
    lines.append("")

    built = sorted(
        (os.path.basename(p)[len("build-") : -len(".log")] for p in glob.glob(os.path.join(work, "build-*.log"))),
        key=lambda pkg: (_package_order(pkg), pkg),
    )
    libraries = cuda_libraries(site, root) if site else {}
    kern = _read_json(os.path.join(work, "kernels.json"))
    if built or kern:
        lines += ["## Build", ""]
        if os.path.exists(os.path.join(work, "build-settings.txt")):
            with open(os.path.join(work, "build-settings.txt")) as f:
                lines += [f"Built with `{f.read().strip()}`.", ""]
        lines += [
            "| package | result | time (s) | CUDA kernels (`_C_cuda.so`) |",
            "|---|---|---:|---|",
        ]
        failed = []
        for pkg in built:
            rc, seconds = (_read_tsv(os.path.join(work, f"build-{pkg}.rc"), 2) or [["", ""]])[0]
            if rc == "0":
                result = "ok"
            elif rc == "":
                result, seconds = "**unfinished**", "-"
            else:
                result = f"**FAILED** (exit status {rc})"
                failed.append(pkg)
            cuda = "-" if pkg not in libraries else ("built" if libraries[pkg] else "**missing**")
            lines.append(f"| {pkg} | {result} | {seconds} | {cuda} |")
        for pkg in failed:
            lines += ["", f"The first errors in `build-{pkg}.log`:", ""]
            lines += _excerpt(os.path.join(work, f"build-{pkg}.log"), first=_EXCERPT_LINES, pattern=r"(?i)error")
        if kern:
            failed = [f"{m} ({w})" for m, w in kern.get("imports", {}).items() if str(w).startswith("FAILED")]
            lines += [
                "",
                f"{len(kern.get('cuda', []))} `torch.ops.detops` ops have a CUDA kernel"
                + (f"; without one: {', '.join(kern['no_cuda'])}." if kern.get("no_cuda") else "."),
            ]
            if failed:
                lines.append(f"Imports that failed: {_cell('; '.join(failed))}")
        lines.append("")

    lines += ["## Tests", ""]
    if tests["source"] is None:
        lines.append("No test results (the stage did not run or stopped before pytest wrote anything).")
        if os.path.exists(os.path.join(work, "tests.log")):
            lines += ["", "The end of `tests.log`:", "", *_excerpt(os.path.join(work, "tests.log"), last=15)]
    else:
        order = ["passed", "failed", "errors", "skipped", "xfailed", "xpassed"]
        c = tests["counts"]
        lines += [
            "| " + " | ".join(order) + " | total |",
            "|" + "---:|" * (len(order) + 1),
            "| " + " | ".join(str(c.get(k, 0)) for k in order) + f" | {sum(c.values())} |",
            "",
            f"Counted from {tests['source']}."
            + (
                " The stage stopped at its time limit: these are the tests that finished."
                if any(st[0] == "tests" and st[1] == "timeout" for st in stages)
                else ""
            ),
        ]
        if tests["failures"]:
            lines += ["", f"Failed ({len(tests['failures'])}, first 40):", ""]
            lines += [f"- `{_cell(f)}`" for f in tests["failures"][:40]]
        if tests["skips"]:
            lines += ["", "Skipped, by reason:", "", "| tests | reason |", "|---:|---|"]
            lines += [f"| {n} | {_cell(reason)} |" for reason, n in tests["skips"][:40]]
    lines.append("")

    lines += ["## compute-sanitizer", ""]
    if sanitizer_rows:
        lines += [
            "| package | tests | tool | result | summary | time (s) |",
            "|---|---|---|---|---|---:|",
        ]
        for pkg, selection, tool, result, summary, seconds, _log in sanitizer_rows:
            shown = result if result == "clean" else f"**{result}**"
            lines.append(f"| {pkg} | `{_cell(selection)}` | {tool} | {shown} | {_cell(summary)} | {seconds} |")
        for pkg, _selection, tool, result, _summary, _seconds, log in sanitizer_rows:
            if result in ("ERRORS", "tool failed"):
                # The reports themselves: compute-sanitizer prefixes each of its lines.
                lines += ["", f"{pkg} {tool}, compute-sanitizer's first lines:", ""]
                lines += _excerpt(os.path.join(work, log), first=_EXCERPT_LINES, pattern="^=+ ")
        lines += ["", "Each run's full output: `sanitizer-<package>-<tool>.log` among the stage logs."]
    else:
        lines.append("Not run (see Stages).")
    lines.append("")

    lines += ["## Benchmark: detops against torchvision's CUDA kernels", ""]
    if bench and bench.get("rows"):
        lines += [
            bench.get("machine", ""),
            "",
            "| op | workload | detops (ms) | torchvision (ms) | ratio (torchvision / detops) |",
            "|---|---|---:|---:|---:|",
        ]
        for row in bench["rows"]:
            if "error" in row:
                lines.append(
                    f"| {_cell(row['op'])} | {_cell(row['workload'])} | **failed**: {_cell(row['error'])} | | |"
                )
            else:
                a, b = row["detops_s"], row["torchvision_s"]
                lines.append(
                    f"| {_cell(row['op'])} | {_cell(row['workload'])} | {a * 1e3:.3f} | {b * 1e3:.3f} | {b / a:.2f}x |"
                )
        lines += ["", "A ratio above 1 means detops is faster."]
    else:
        lines.append("No benchmark results (see Stages).")
        if os.path.exists(os.path.join(work, "bench.log")):
            lines += ["", "The end of `bench.log`:", "", *_excerpt(os.path.join(work, "bench.log"), last=15)]
    lines.append("")

    commands = _read_tsv(os.path.join(work, "commands.tsv"), 2)
    lines += ["## Commands", "", "```bash"]
    lines += [f"# {stage}\n{cmd}" for stage, cmd in commands] or ["# (none recorded)"]
    lines += ["```", ""]
    lines.append(f"Logs of every stage: `{work}`.")

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"[gpu-check] report: {out} ({verdict})")
    if env.get("exit") in (EXIT_NO_GPU, EXIT_MISSING):
        return env["exit"]
    return 0 if verdict == "PASSED" else 1


# ---------------------------------------------------------------------------------------
# self-test


def self_test() -> int:
    """Renders made-up stage results (every value marked FAKE, in a temporary folder that is
    then deleted) and checks the report's content: counts, a timed-out stage, a missing
    tool, sanitizer verdicts, benchmark rows."""
    with tempfile.TemporaryDirectory() as tmp:
        work, root, site = (os.path.join(tmp, d) for d in ("results", "root", "site"))

        def put(name: str, text: str, folder: str = work) -> None:
            os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
            with open(os.path.join(folder, name), "w") as f:
                f.write(text)

        for pkg in ("nms", "roi"):
            put(f"packages/{pkg}/csrc/cuda/FAKE.cu", "", root)
        put("packages/core/csrc/FAKE.cpp", "", root)
        put("detops_nms/_C_cuda.so", "", site)

        env = {
            "started": "FAKE",
            "gpu": "FAKE GPU",
            "arch": "00",
            "torch": "FAKE",
            "pytest": "FAKE",
            "pytest-xdist": None,
            "warnings": ["pytest-xdist is not installed: the tests run in one process"],
            "missing": [],
            "no_gpu": [],
            "exit": 0,
        }
        _write_json(os.path.join(work, "env.json"), env)
        put(
            "stages.tsv",
            "probe\tok\t0\t1\t30\t\nbuild\tok\t0\t2\t120\t\ntests\tfailed\t1\t3\t170\t\n"
            "sanitizer\tok\t0\t4\t60\t\nbench\ttimeout\t124\t5\t80\tstopped by the 80 s limit\n"
            "tests\ttimeout\t124\t6\t7\t\n",
        )
        put("commands.tsv", "build\tpip wheel FAKE\ntests\tpytest FAKE\n")
        put("build-settings.txt", "DETOPS_CUDA_ARCHS=00\n")
        for pkg, rc in (("core", "0\t1"), ("nms", "0\t2"), ("roi", "2\t3"), ("fpn", None)):
            put(f"build-{pkg}.log", f"FAKE log\nFAKE error: {pkg}\n")
            if rc:
                put(f"build-{pkg}.rc", rc + "\n")
        _write_json(
            os.path.join(work, "kernels.json"), {"imports": {"detops": "FAKE"}, "cuda": ["a"], "no_cuda": ["b"]}
        )
        put(
            "tests.xml",
            '<testsuites><testsuite name="pytest">'
            '<testcase classname="t" name="a[cpu]"/>'
            '<testcase classname="t" name="a[cuda]"><failure message="FAKE mismatch">x</failure></testcase>'
            '<testcase classname="t" name="b[cuda]"><skipped type="pytest.skip" message="FAKE reason"/></testcase>'
            '<testcase classname="t" name="c"><skipped type="pytest.xfail" message="x"/></testcase>'
            '<testcase classname="t" name="d"><error message="FAKE setup error">x</error></testcase>'
            "</testsuite></testsuites>",
        )
        put(
            "sanitizer.tsv",
            "nms\tmemcheck\tf.py\tcuda\t0\t1\ts1.log\nnms\tracecheck\tf.py\tcuda\t86\t1\ts2.log\n"
            "roi\tmemcheck\tg.py\tcuda\t5\t1\ts3.log\nroi\tracecheck\tg.py\tcuda\t1\t1\ts4.log\n"
            "fpn\tmemcheck\th.py\tcuda\t124\t1\ts5.log\nfpn\tracecheck\th.py\tcuda\t0\t1\ts6.log\n"
            "deform\tmemcheck\tno.py\tcuda\tnofile\t0\ts7.log\n",
        )
        put("s1.log", "3 passed, 9 deselected in 1.00s\n========= ERROR SUMMARY: 0 errors\n")
        put(
            "s2.log",
            "========= Race reported\n========= RACECHECK SUMMARY: 2 hazards displayed (2 errors, 0 warnings)\n",
        )
        put("s3.log", "12 deselected in 1.00s\n========= ERROR SUMMARY: 0 errors\n")
        put("s4.log", "========= Error: Device not supported\n")
        put("s5.log", "")
        put(
            "s6.log",
            "4 skipped, 1 deselected in 1.00s\n"
            "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n",
        )
        put("s7.log", "no such test file: no.py\n")
        _write_json(
            os.path.join(work, "bench.json"),
            {
                "machine": "FAKE machine",
                "rows": [
                    {"op": "FAKE op", "workload": "w", "detops_s": 0.001, "torchvision_s": 0.002, "rounds": 1},
                    {"op": "FAKE op2", "workload": "w", "error": "AssertionError: FAKE"},
                ],
            },
        )
        out = os.path.join(work, "report.md")
        status = render(work, out, site, root)
        text = open(out).read()
        if os.environ.get("DETOPS_GPU_REPORT_SHOW"):
            print(text)
        expect = [
            "**FAILED**: tests failed",
            "bench timeout (stopped by the 80 s limit)",
            "| 1 | 1 | 1 | 1 | 1 | 0 | 5 |",  # passed failed errors skipped xfailed xpassed total
            "t::a[cuda]: FAKE mismatch",
            "| 1 | FAKE reason |",
            "| pytest-xdist | **not found** |",
            "- Warning: pytest-xdist is not installed",
            "| nms | `f.py -k 'cuda'` | memcheck | clean | ERROR SUMMARY: 0 errors; pytest: 3 passed, 9 deselected in",
            "| nms | `f.py -k 'cuda'` | racecheck | **ERRORS** |",
            "nms racecheck, compute-sanitizer's first lines:\n\n```\n========= Race reported",
            "| roi | `g.py -k 'cuda'` | memcheck | **nothing ran** | ERROR SUMMARY: 0 errors; pytest: 12 deselected",
            "| roi | `g.py -k 'cuda'` | racecheck | **tool failed** | ========= Error: Device not supported |",
            "| fpn | `h.py -k 'cuda'` | memcheck | **timed out** |",
            "| fpn | `h.py -k 'cuda'` | racecheck | **nothing ran** |",
            "| deform | `no.py -k 'cuda'` | memcheck | **no test file** | no such test file: no.py |",
            "| sanitizer | ok | 4 | 60 | 7 runs: 2 nothing ran, 1 ERRORS, 1 clean,",
            "time limit: these are the tests that finished.",
            "| FAKE op | w | 1.000 | 2.000 | 2.00x |",
            "| FAKE op2 | w | **failed**: AssertionError: FAKE | | |",
            "| bench | **TIMED OUT** | 5 | 80 | stopped by the 80 s limit |",
            "Built with `DETOPS_CUDA_ARCHS=00`.",
            "| core | ok | 1 | - |",
            "| nms | ok | 2 | built |",
            "| roi | **FAILED** (exit status 2) | 3 | **missing** |",
            "| fpn | **unfinished** | - | - |",
            "The first errors in `build-roi.log`:\n\n```\nFAKE error: roi\n```",
            "without one: b.",
            "# tests\npytest FAKE",
        ]
        absent = [e for e in expect if e not in text]
        if status != 1 or absent:
            print(text)
            print(f"self-test FAILED: exit status {status} (expected 1); not in the report: {absent}")
            return 1
        os.remove(os.path.join(work, "tests.xml"))
        put(
            "tests.log",
            "SKIPPED [3] t.py:4: no CUDA device\nFAILED t.py::x - boom\n1 failed, 2 passed, 3 skipped in 1.0s\n",
        )
        counted = test_counts(work)
        if counted["counts"] != {"failed": 1, "passed": 2, "skipped": 3} or counted["skips"] != [("no CUDA device", 3)]:
            print(f"self-test FAILED: counts from the log: {counted}")
            return 1
    print("self-test passed: the report renders made-up results as expected")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--json", required=True)
    p.add_argument("--shell")
    p = sub.add_parser("kernels")
    p.add_argument("--json", required=True)
    p.add_argument("--site", help="where this build installed the packages")
    p = sub.add_parser("render")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--site", help="where the build installed the packages")
    sub.add_parser("self-test")
    args = parser.parse_args()
    if args.command == "probe":
        sys.exit(probe(args))
    if args.command == "kernels":
        sys.exit(kernels(args))
    if args.command == "render":
        sys.exit(render(args.work, args.out, args.site))
    sys.exit(self_test())
