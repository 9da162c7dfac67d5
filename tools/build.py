"""Build wheels of the given packages (and what they need) into dist/ and install them.

    python ci/build.py nms roi           # build with the dev env, install there
    python ci/build.py --into compat nms # also install the same wheels into compat

Builds run without isolation against the dev env's torch and keep their CMake build dir
(packages/<pkg>/build/), so a package whose sources did not change rebuilds in seconds.
Variant builds (ci/sanitize.py) pass their own config settings, wheel folder and build
dir, and install into a plain folder (`site`) instead of the dev env.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import os
import subprocess
import sys
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import envs  # noqa: E402

import packages  # noqa: E402

DIST = os.path.join(packages.ROOT, "dist")


def wheel_of(pkg: str, dist: str = DIST) -> str:
    stem = packages.wheel_stem(pkg)
    found = sorted(glob.glob(os.path.join(dist, f"{stem}-*.whl")), key=os.path.getmtime)
    if not found:
        raise SystemExit(f"no wheel for {pkg} in {dist}")
    return found[-1]


def pip(python: str, *args: str) -> None:
    subprocess.run([python, "-m", "pip", "--disable-pip-version-check", *args], check=True)


@contextlib.contextmanager
def _exclusive(dist: str):
    # Two builds at once would delete each other's wheels in dist/: take turns.
    os.makedirs(dist, exist_ok=True)
    with open(os.path.join(dist, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build(
    names: list[str],
    into: list[str],
    *,
    dist: str = DIST,
    config: Sequence[str] = (),
    site: str | None = None,
) -> list[str]:
    """Build `names` and what they need into `dist`, install them into the dev env and the
    environments `into`. `config` holds extra scikit-build-core settings ("key=value").
    With `site`, the wheels go into that folder (`pip install --target`) instead of the dev
    env, which still builds them."""
    with _exclusive(dist):
        return _build(names, into, dist, list(config), site)


def _build(names: list[str], into: list[str], dist: str, config: list[str], site: str | None) -> list[str]:
    # Development builds compile CUDA for two architectures (sm_80 SASS, sm_90 SASS + PTX):
    # enough to prove every .cu compiles, far faster than the release list.
    os.environ.setdefault("DETOPS_CUDA_ARCHS", "80-real;90")
    dev = envs.ensure("dev")
    targets = [envs.ensure(e) for e in into if e != "dev"]
    os.makedirs(dist, exist_ok=True)
    settings = [f"-C{c}" for c in config]
    if site is not None:
        os.makedirs(site, exist_ok=True)
        # The packages build against the tree's detops-core (CMake config, headers), not
        # whatever version the dev env holds; not against the copy in `site` either: pip
        # gives installed files fresh mtimes, and ninja would recompile everything.
        core = os.path.join(packages.path("core"), "src", "detops_core", "cmake")
        settings.append(f"-Ccmake.define.detops_core_DIR={core}")
    wheels = []
    for pkg in packages.closure(names):
        print(f"[build] {pkg}", flush=True)
        for old in glob.glob(os.path.join(dist, f"{packages.wheel_stem(pkg)}-*.whl")):
            os.remove(old)
        pip(dev, "wheel", "--quiet", "--no-build-isolation", "--no-deps", *settings, "-w", dist, packages.path(pkg))
        wheel = wheel_of(pkg, dist)
        if site is None:
            # Later packages find detops-core (CMake config, headers) in the dev env.
            pip(dev, "install", "--quiet", "--no-deps", "--force-reinstall", wheel)
        else:
            pip(dev, "install", "--quiet", "--no-deps", "--upgrade", "--target", site, wheel)
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
