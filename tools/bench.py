"""Interleaved benchmarks of detops against torchvision 0.29.1 (`nox -s bench`).

Every package may have benchmarks/bench_*.py defining `cases(quick: bool)`, which yields
(op, workload, detops_fn, torchvision_fn[, baseline name]): two zero-argument callables doing
the same work. They alternate, call by call, so both see the same machine state; the table
gives each one's median time and the ratio. With `--device cuda` (tools/gpu_check.py) the
same workloads run on the GPU (`cases(quick, device="cuda")`), each call timed with CUDA
events from an idle GPU.

    python tools/bench.py [--threads 2] [--packages nms roi] [--quick] [--seconds S]
                          [--markdown FILE] [--device cpu|cuda] [--keep-going]
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import runpy
import statistics
import sys
import time

from build import PACKAGES, ROOT


def _time_interleaved(ours, theirs, min_seconds: float, min_rounds: int, cuda: bool = False):
    """Median seconds of `ours` and of `theirs`, called alternately, and the rounds made."""
    if cuda:
        import torch
    for _ in range(3 if cuda else 1):  # warm-up: allocations, lazy init, caches, cuDNN handles
        ours()
        theirs()
    t_ours, t_theirs = [], []
    start = time.perf_counter()
    while (len(t_ours) < min_rounds or time.perf_counter() - start < min_seconds) and len(t_ours) < 200:
        for fn, out in ((ours, t_ours), (theirs, t_theirs)):
            if not cuda:
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
                continue
            # Each call starts on an idle GPU: otherwise the call after the other op's
            # queued kernels would hide its own launch overhead and the other's would not.
            torch.cuda.synchronize()
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            out.append(begin.elapsed_time(end) / 1e3)
    return statistics.median(t_ours), statistics.median(t_theirs), len(t_ours)


def _machine(args, torch, torchvision) -> str:
    versions = f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    if args.device == "cuda":
        (major, minor), name = torch.cuda.get_device_capability(), torch.cuda.get_device_name()
        return f"GPU: {name} (sm_{major}{minor}), CUDA {torch.version.cuda}; {versions}. Median of interleaved calls, each timed with CUDA events from an idle GPU."  # noqa: E501
    models = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
    model = (models or [platform.processor() or platform.machine()])[0]
    return (
        f"Machine: {model}, {os.cpu_count()} cores; {versions}; {args.threads} thread(s). Median of interleaved calls."
    )


def _table(machine: str, rows: list) -> str:
    lines = [machine, "", "| op | workload | detops (ms) | torchvision or named baseline (ms) | speed-up |"]
    lines.append("|---|---|---:|---:|---:|")
    for op, workload, a, b, n in rows:
        ms = f"failed: {n} | |" if a is None else f"{a * 1e3:.3f} | {b * 1e3:.3f} | {b / a:.2f}x"
        lines.append(f"| {op} | {workload} | {ms} |")
    return "\n".join(lines)


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def run(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    import torchvision

    if args.device == "cuda" and not torch.cuda.is_available():
        # Exit status 3, as tools/gpu_check.py's "no NVIDIA GPU found".
        built = torch.version.cuda or "none"
        print(f"bench.py --device cuda: no CUDA device for torch {torch.__version__} (CUDA {built})", file=sys.stderr)
        sys.exit(3)
    machine, rows, cuda = _machine(args, torch, torchvision), [], args.device == "cuda"
    # With --device cuda a bench file's cases(quick, device="cuda"): the same workloads on the GPU.
    on_device = {"device": "cuda"} if cuda else {}
    files = (sorted(glob.glob(f"{ROOT}/packages/{p}/benchmarks/bench_*.py")) for p in args.packages or PACKAGES)
    for path in (f for found in files for f in found):
        try:
            for op, workload, ours, theirs, *baseline in runpy.run_path(path)["cases"](args.quick, **on_device):
                op = f"{op} (vs {baseline[0]})" if baseline else op
                try:
                    with torch.no_grad() if "backward" not in op else torch.enable_grad():
                        a, b, n = _time_interleaved(ours, theirs, args.seconds, 10 if cuda else 5, cuda)
                    print(f"{op:32s} {workload:44s} detops {a * 1e3:9.3f} ms  torchvision {b * 1e3:9.3f} ms  "
                          f"speed-up {b / a:6.2f}x  ({n} rounds)", flush=True)  # fmt: skip
                except Exception as e:
                    if not args.keep_going:
                        raise
                    a, b, n = None, None, f"{type(e).__name__}: {e}"
                    print(f"{op:32s} {workload:44s} FAILED: {n}", flush=True)
                rows.append((op, workload, a, b, n))
                if args.markdown:
                    _write(args.markdown, _table(machine, rows) + "\n")
        except Exception as e:
            # A case generator that raised (a setup or agreement check) has no more cases.
            if not args.keep_going:
                raise
            rows.append(
                (os.path.basename(path)[:-3], "(remaining cases of this file)", None, None, f"{type(e).__name__}: {e}")
            )
            print(f"{rows[-1][0]}: FAILED: {rows[-1][4]}", flush=True)
    table = _table(machine, rows)
    print(f"\n{table}")
    if args.markdown:  # with the command, for the results files the documentation draws from
        command = " ".join(a.replace(ROOT + os.sep, "") for a in sys.argv[1:])
        _write(args.markdown, f"{table}\n\nProduced by `python3 -m nox -s bench -- {command}`.\n")
    if any(a is None for _, _, a, _, _ in rows):
        sys.exit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--packages", nargs="*")
    parser.add_argument("--quick", action="store_true", help="small workloads, for smoke tests")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum time per case")
    parser.add_argument("--markdown", default=os.path.join(ROOT, "bench-results", "bench.md"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both libraries run")
    parser.add_argument("--keep-going", action="store_true", help="record a failing case, go on, exit 1 at the end")
    args = parser.parse_args()
    run(args)
