"""Build wheels of the given packages (and what they need) into dist/ and install them.

    python ci/build.py nms roi           # build with the dev env, install there
    python ci/build.py --into compat nms # also install the same wheels into compat

Builds run without isolation against the dev env's torch and keep their CMake build dir
(packages/<pkg>/build/), so a package whose sources did not change rebuilds in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import envs  # noqa: E402

import packages  # noqa: E402

DIST = os.path.join(packages.ROOT, "dist")
WHEEL_NAMES = {"meta": "detops"}


def wheel_of(pkg: str) -> str:
    stem = WHEEL_NAMES.get(pkg, f"detops_{pkg}")
    found = sorted(glob.glob(os.path.join(DIST, f"{stem}-*.whl")), key=os.path.getmtime)
    if not found:
        raise SystemExit(f"no wheel for {pkg} in {DIST}")
    return found[-1]


def pip(python: str, *args: str) -> None:
    subprocess.run([python, "-m", "pip", "--disable-pip-version-check", *args], check=True)


@contextlib.contextmanager
def _exclusive():
    # Two builds at once would delete each other's wheels in dist/: take turns.
    os.makedirs(DIST, exist_ok=True)
    with open(os.path.join(DIST, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build(names: list[str], into: list[str]) -> list[str]:
    with _exclusive():
        return _build(names, into)


def _build(names: list[str], into: list[str]) -> list[str]:
    # Development builds compile CUDA for two architectures (sm_80 SASS, sm_90 SASS + PTX):
    # enough to prove every .cu compiles, far faster than the release list.
    os.environ.setdefault("DETOPS_CUDA_ARCHS", "80-real;90")
    dev = envs.ensure("dev")
    targets = [envs.ensure(e) for e in into if e != "dev"]
    os.makedirs(DIST, exist_ok=True)
    wheels = []
    for pkg in packages.closure(names):
        print(f"[build] {pkg}", flush=True)
        for old in glob.glob(os.path.join(DIST, f"{WHEEL_NAMES.get(pkg, f'detops_{pkg}')}-*.whl")):
            os.remove(old)
        pip(dev, "wheel", "--quiet", "--no-build-isolation", "--no-deps", "-w", DIST, packages.path(pkg))
        wheel = wheel_of(pkg)
        # Later packages find detops-core (CMake config, headers) in the dev env.
        pip(dev, "install", "--quiet", "--no-deps", "--force-reinstall", wheel)
        wheels.append(wheel)
    for python in targets:
        pip(python, "install", "--quiet", "--no-deps", "--force-reinstall", *wheels)
    return wheels


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("packages", nargs="*", help="default: every package")
    parser.add_argument("--into", action="append", default=["dev"], help="extra environments")
    args = parser.parse_args()
    build(args.packages or packages.present(), args.into)
