"""One version for every package: the installed detops distributions, the exact pins
between them, every pyproject.toml and CHANGELOG.md's newest entry all agree with the
repository's VERSION file, so a release cannot ship packages that disagree. And the release
builds' cibuildwheel configuration (the root pyproject.toml) selects what it should."""

import importlib.metadata
import pathlib
import re
import subprocess
import sys

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[3]
VERSION = (ROOT / "VERSION").read_text().strip()
PYPROJECTS = sorted(ROOT.glob("packages/*/pyproject.toml"))
DETOPS_DISTRIBUTIONS = sorted(
    d.metadata["Name"] for d in importlib.metadata.distributions() if d.metadata["Name"].startswith("detops")
)


def _detops_requirements(dist):
    """(name, specifier) of each detops package `dist` requires."""
    found = []
    for line in importlib.metadata.requires(dist) or []:
        match = re.fullmatch(r"(detops[-\w]*)\s*(.*)", line.split(";")[0].strip())
        if match:
            found.append(match.groups())
    return found


def test_version_file_is_one_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*", VERSION), VERSION


@pytest.mark.parametrize("dist", DETOPS_DISTRIBUTIONS)
def test_installed_package_has_the_version_and_exact_pins(dist):
    assert importlib.metadata.version(dist) == VERSION
    for name, specifier in _detops_requirements(dist):
        assert specifier == f"=={VERSION}", f"{dist} requires {name}{specifier}, not =={VERSION}"


@pytest.mark.parametrize("path", PYPROJECTS, ids=lambda p: p.parent.name)
def test_pyproject_takes_version_and_pins_from_the_version_file(path):
    meta = tomllib.loads(path.read_text())
    assert "version" in meta["project"]["dynamic"] and "version" not in meta["project"]
    version = meta["tool"]["scikit-build"]["metadata"]["version"]
    assert (path.parent / version["input"]).resolve() == ROOT / "VERSION"
    assert "dependencies" not in meta["project"], "dependencies come from the template, pinned to the version"
    required = meta["tool"]["scikit-build"]["metadata"].get("dependencies", {}).get("result", [])
    for requirement in required:
        if requirement.startswith("detops"):
            assert requirement.endswith("=={project[version]}"), f"{path}: {requirement}"


def test_changelog_names_the_version_first():
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert headings and headings[0] == VERSION, headings[:1]


NATIVE = sorted(p.parent.name for p in ROOT.glob("packages/*/CMakeLists.txt"))


@pytest.mark.parametrize("package", NATIVE)
def test_cibuildwheel_builds_every_supported_cpython_on_manylinux(package):
    """cibuildwheel itself reads the configuration (no container runs here: this machine has no
    container engine) and selects one manylinux x86_64 build per CPython from the package's
    requires-python to the newest torch supports (3.14), nothing else."""
    pytest.importorskip("cibuildwheel", reason="cibuildwheel is a development tool (tools/requirements-dev.txt)")
    command = [sys.executable, "-m", "cibuildwheel", "--platform", "linux", "--config-file", "pyproject.toml"]
    listed = subprocess.run(
        [*command, "--print-build-identifiers", f"packages/{package}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    meta = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())
    oldest = int(re.fullmatch(r">=3\.(\d+)", meta["project"]["requires-python"]).group(1))
    assert listed == [f"cp3{minor}-manylinux_x86_64" for minor in range(oldest, 15)]
