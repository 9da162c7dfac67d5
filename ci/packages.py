"""The packages of the monorepo, in build order (a package comes after what it needs)."""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_ORDER = ["core", "nms", "roi", "deform", "deform_attn", "fpn", "meta"]
# What each package needs at run time, besides torch.
DEPENDS = {
    "core": [],
    "nms": ["core"],
    "roi": ["core"],
    "deform": ["core"],
    "deform_attn": ["core"],
    "fpn": ["core", "roi"],
    "meta": ["core", "nms", "roi", "deform", "deform_attn", "fpn"],
}


def present() -> list[str]:
    return [p for p in BUILD_ORDER if os.path.exists(os.path.join(ROOT, "packages", p, "pyproject.toml"))]


def closure(names: list[str]) -> list[str]:
    """`names` and everything they depend on, in build order."""
    wanted: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            stack.extend(DEPENDS[name])
    return [p for p in present() if p in wanted]


def path(name: str) -> str:
    return os.path.join(ROOT, "packages", name)


def tests_dir(name: str) -> str | None:
    d = os.path.join(path(name), "tests")
    return d if os.path.isdir(d) else None
