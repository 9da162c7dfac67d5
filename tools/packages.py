"""The packages of the monorepo and their dependency graph, read from packages/*/pyproject.toml
(the one place it is written): a package's `dependencies` naming another detops wheel."""

from __future__ import annotations

import glob
import graphlib
import os
import re

import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _project(pkg: str) -> dict:
    with open(os.path.join(path(pkg), "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _graph() -> dict[str, list[str]]:
    found = sorted(
        os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(ROOT, "packages", "*", "pyproject.toml"))
    )
    folder = {_project(p)["name"]: p for p in found}
    # A requirement starts with its distribution name ("detops-roi==0.1.0").
    names = {p: [re.match(r"[A-Za-z0-9._-]+", d).group(0) for d in _project(p).get("dependencies", [])] for p in found}
    return {p: [folder[n] for n in deps if n in folder] for p, deps in names.items()}


def present() -> list[str]:
    """Every package, each after what it needs (sorted by name where the graph allows)."""
    sorter = graphlib.TopologicalSorter(_graph())
    sorter.prepare()
    order = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order += ready
        sorter.done(*ready)
    return order


def closure(names: list[str]) -> list[str]:
    """`names` and everything they need, in build order."""
    graph, wanted, stack = _graph(), set(), list(names)
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            stack.extend(graph[name])
    return [p for p in present() if p in wanted]


def path(name: str) -> str:
    return os.path.join(ROOT, "packages", name)


def wheel_stem(name: str) -> str:
    """The wheel file name's start (also the import name): detops_nms, detops for meta."""
    return _project(name)["name"].replace("-", "_")


def tests_dir(name: str) -> str | None:
    d = os.path.join(path(name), "tests")
    return d if os.path.isdir(d) else None


def native(name: str) -> bool:
    return os.path.exists(os.path.join(path(name), "CMakeLists.txt"))


if __name__ == "__main__":
    for pkg in present():
        print(f"{pkg}: {' '.join(_graph()[pkg]) or '-'}")
