"""Run the test suites of the given packages in one pytest run (one summary line).

python ci/test.py [--env dev|compat-<torch>] [pkg ...] [pytest args]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import envs  # noqa: E402

import packages  # noqa: E402

# Run from a folder outside the sources so the installed wheels are what gets imported.
CWD = os.path.join(packages.ROOT, "ci")


def run(python: str, names: list[str], extra: list[str], env: dict[str, str] | None = None) -> int:
    """pytest over the tests of `names` (default: every package) under `python`; returns
    its exit status. `env` replaces the environment (ci/sanitize.py sets one)."""
    names = names or packages.present()
    dirs = [d for d in (packages.tests_dir(p) for p in names) if d]
    if not dirs:
        raise SystemExit(f"no tests found for {names}")
    cmd = [python, "-m", "pytest", "--import-mode=importlib", "-q", "-ra", *dirs, *extra]
    print("[test]", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=CWD, env=env).returncode


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="dev")
    args, rest = parser.parse_known_args()
    # Leading package names pick the tests (default: every package's); the rest is pytest's
    # (so `-p no:warnings` or `-k expr` never reads as a package name).
    names = []
    while rest and rest[0] in packages.present():
        names.append(rest.pop(0))
    sys.exit(run(envs.ensure(args.env), names, rest))
