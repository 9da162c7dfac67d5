"""The benchmark page's charts, drawn at build time from the results files that
`nox -s bench -- --markdown benchmarks/results/<name>.md` writes (tools/bench.py's table:
a line naming the machine, then one row per case), so no number is copied by hand."""

from __future__ import annotations

import glob
import os
import re
import textwrap


def _rows(text: str) -> list[tuple[str, str, float, float]]:
    """(op, workload, detops ms, baseline ms) of each measured row."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"[\d.]+", cells[2]) and re.fullmatch(r"[\d.]+", cells[3]):
            rows.append((cells[0], cells[1], float(cells[2]), float(cells[3])))
    return rows


def _chart(rows: list, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{op} | {workload}" for op, workload, _, _ in rows]
    speedups = [theirs / ours for _, _, ours, theirs in rows]
    fig, ax = plt.subplots(figsize=(9, 0.2 * len(rows) + 1.5))
    ax.barh(range(len(rows)), speedups, color=["C0" if s >= 1 else "C3" for s in speedups])
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xlabel("speed-up over the baseline (log scale; right of the line: detops faster)")
    ax.set_title(textwrap.fill(title, 90), fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def write(root: str, out: str) -> None:
    """out/<name>.png: the chart of each CPU results file <name>.md (cpu-*.md: tools/bench.py's
    tables; the GPU check's reports, gpu-*.md, are whole reports with tables of their own)."""
    os.makedirs(out, exist_ok=True)
    for path in sorted(glob.glob(os.path.join(root, "benchmarks", "results", "cpu-*.md"))):
        name = os.path.splitext(os.path.basename(path))[0]
        text = open(path).read()
        rows = _rows(text)
        if not rows:
            raise ValueError(f"{path}: no benchmark rows")
        machine = text.splitlines()[0]
        _chart(rows, machine, os.path.join(out, f"{name}.png"))
