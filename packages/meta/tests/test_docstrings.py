"""The public API docstrings are complete (issue 25): the API pages in docs/ops/ are autodoc
of these docstrings, so each public function and module class of the native packages
states its arguments, its devices, its determinism and its ONNX support, and each
plain-PyTorch layer of ``detops`` its arguments and its ONNX support.

A class counts as documented when its class docstring or its ``__init__`` docstring has
the text.
"""

import importlib
import inspect
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]

# Every package with native code (a CMakeLists.txt), as imported: detops_<folder name>.
NATIVE_PACKAGES = sorted(f"detops_{p.parent.name}" for p in ROOT.glob("packages/*/CMakeLists.txt"))
META_NAMES = [
    "detops.misc.FrozenBatchNorm2d",
    "detops.misc.Conv2dNormActivation",
    "detops.misc.Conv3dNormActivation",
    "detops.misc.SqueezeExcitation",
    "detops.misc.MLP",
    "detops.misc.Permute",
    "detops.drop_block.drop_block2d",
    "detops.drop_block.drop_block3d",
    "detops.drop_block.DropBlock2d",
    "detops.drop_block.DropBlock3d",
    "detops.stochastic_depth.stochastic_depth",
    "detops.stochastic_depth.StochasticDepth",
    "detops.use_detops",
]


def _native_names():
    names = []
    for package in NATIVE_PACKAGES:
        module = importlib.import_module(package)
        names += [package + "." + name for name in module.__all__ if name != "build_info"]
    return names


def _resolve(qualified):
    module_name, name = qualified.rsplit(".", 1)
    return getattr(importlib.import_module(module_name), name)


def _docstring(obj):
    """The docstring text that documents ``obj`` (a class: class and __init__ docstrings)."""
    text = obj.__doc__ or ""
    if inspect.isclass(obj):
        text += "\n" + (obj.__init__.__doc__ or "")
    return text


def _missing(text, native):
    missing = []
    if "Args" not in text:
        missing.append("Args")
    if "ONNX" not in text:
        missing.append("ONNX")
    if native:
        if "CUDA" not in text:
            missing.append("CUDA")
        if not re.search(r"determinis|repeatable", text):
            missing.append("a determinism statement")
    return missing


def test_the_lists_are_not_empty():
    # Guards against a refactoring that empties __all__ and so passes vacuously.
    assert len(_native_names()) >= 40


@pytest.mark.parametrize("qualified", _native_names())
def test_native_package_docstring_is_complete(qualified):
    missing = _missing(_docstring(_resolve(qualified)), native=True)
    assert not missing, f"{qualified}: the docstring lacks {', '.join(missing)}"


@pytest.mark.parametrize("qualified", META_NAMES)
def test_meta_layer_docstring_is_complete(qualified):
    missing = _missing(_docstring(_resolve(qualified)), native=False)
    assert not missing, f"{qualified}: the docstring lacks {', '.join(missing)}"


def test_a_lacking_docstring_fails():
    # The check itself: a docstring without the ONNX sentence is reported.
    text = _docstring(_resolve("detops_nms.nms")).replace("ONNX", "")
    assert _missing(text, native=True) == ["ONNX"]
