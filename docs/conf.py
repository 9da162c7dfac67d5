"""Sphinx configuration of the detops documentation (`nox -s docs`).

The API pages are autodoc of the installed packages (build them first: `nox -s docs` does),
so what they show is what ships. Pages are MyST Markdown. `{testcode}` blocks run as
tests under the doctest builder. The benchmark charts are drawn at build time from the
results files in ../benchmarks/results (benchmark_charts.py)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_charts  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
project = "detops"
version = release = open(os.path.join(ROOT, "VERSION")).read().strip()
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.doctest"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "alabaster"
html_static_path = []


def setup(app):
    app.connect("builder-inited", lambda app: benchmark_charts.write(ROOT, os.path.join(app.srcdir, "_generated")))
