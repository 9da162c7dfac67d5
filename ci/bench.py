"""Interleaved benchmarks of detops against torchvision 0.29.1.

Every package may have benchmarks/bench_*.py defining

    def cases(quick: bool) -> Iterable[Case]

where a Case is (op, workload, detops_fn, torchvision_fn): two zero-argument callables
doing the same work. For each case the two callables alternate, call by call, so both
see the same machine state; the table reports the median time of each and the ratio.

    python ci/bench.py [--threads 2] [--packages nms roi] [--quick] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import envs  # noqa: E402

import packages  # noqa: E402


def _time_interleaved(ours, theirs, min_seconds: float, min_rounds: int):
    ours()
    theirs()  # warm-up: allocations, lazy init, caches
    t_ours, t_theirs = [], []
    start = time.perf_counter()
    while len(t_ours) < min_rounds or time.perf_counter() - start < min_seconds:
        for fn, out in ((ours, t_ours), (theirs, t_theirs)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        if len(t_ours) >= 200:
            break
    return statistics.median(t_ours), statistics.median(t_theirs), len(t_ours)


def _load(path: str):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_inside(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    import torchvision

    rows = []
    files = []
    for pkg in args.packages or packages.present():
        files += sorted(glob.glob(os.path.join(packages.path(pkg), "benchmarks", "bench_*.py")))
    for path in files:
        for op, workload, ours, theirs in _load(path).cases(args.quick):
            with torch.no_grad() if "backward" not in op else torch.enable_grad():
                a, b, n = _time_interleaved(ours, theirs, args.seconds, 5)
            rows.append((op, workload, a, b, n))
            print(
                f"{op:32s} {workload:44s} detops {a * 1e3:9.3f} ms  torchvision {b * 1e3:9.3f} ms  "
                f"speed-up {b / a:6.2f}x  ({n} rounds)",
                flush=True,
            )
    cpu = platform.processor() or platform.machine()
    try:
        model = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")][0]
    except (OSError, IndexError):
        model = cpu
    lines = [
        f"Machine: {model}, {os.cpu_count()} cores; torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}; {args.threads} thread(s). Median of interleaved calls.",
        "",
        "| op | workload | detops (ms) | torchvision (ms) | speed-up |",
        "|---|---|---:|---:|---:|",
    ]
    for op, workload, a, b, _ in rows:
        lines.append(f"| {op} | {workload} | {a * 1e3:.3f} | {b * 1e3:.3f} | {b / a:.2f}x |")
    table = "\n".join(lines)
    print()
    print(table)
    if args.update_readme:
        readme = os.path.join(packages.ROOT, "README.md")
        text = open(readme).read()
        begin, end = "<!-- bench-table -->\n", "<!-- /bench-table -->"
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        command = (
            "python3 -m nox -s bench -- " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "python3 -m nox -s bench"
        )
        with open(readme, "w") as f:
            f.write(
                head
                + begin
                + f"Produced by `{command.replace(' --update-readme', '').strip()}`.\n"
                + table
                + "\n"
                + end
                + tail
            )
    if args.markdown:
        os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
        with open(args.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--packages", nargs="*")
    parser.add_argument("--quick", action="store_true", help="small workloads, for smoke tests")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum time per case")
    parser.add_argument("--markdown", default=os.path.join(packages.ROOT, "bench-results", "bench.md"))
    parser.add_argument("--update-readme", action="store_true", help="write the table into README.md")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        run_inside(args)
    else:
        python = envs.ensure("dev")
        sys.exit(subprocess.run([python, os.path.abspath(__file__), "--inside", *sys.argv[1:]]).returncode)
