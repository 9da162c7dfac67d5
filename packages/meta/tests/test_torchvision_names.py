"""Every public name of torchvision.ops 0.29 exists in detops with torchvision's signature,
and every torchvision.ops submodule exists as detops.<submodule> with its names.

Enumerated from torchvision itself (dir(), no leading underscore), one case per name, so a
missing name fails on its own with its name in the test id. Signatures compare parameter
names, kinds and defaults (not annotations) of functions and of classes' __init__; detops
may add keyword-only parameters with defaults after torchvision's (nms's ``max_output``):
every call written for torchvision means the same with detops.
"""

import importlib
import inspect
import sys

import pytest

import detops
from detops_core.testing import torchvision_ops

tv = torchvision_ops((0, 29))
pytestmark = pytest.mark.skipif(tv is None, reason="torchvision 0.29 (whose names are the contract) is not installed")


def _public(module):
    return sorted(name for name in dir(module) if not name.startswith("_"))


def _submodules():
    # The submodules torchvision.ops imports, the ones a function of the same name shadows
    # in dir() (roi_align, stochastic_depth, ...) included.
    if tv is None:
        return []
    prefix = tv.__name__ + "."
    return sorted(
        key[len(prefix) :]
        for key in list(sys.modules)
        if key.startswith(prefix) and "." not in key[len(prefix) :] and not key[len(prefix) :].startswith("_")
    )


# torchvision's own helpers for compiling its Python roi_align, not operators.
NOT_API = {("roi_align", "lazy_compile"), ("roi_align", "maybe_cast")}


def _submodule_names():
    """(submodule, name) for each public name of torchvision.ops.<submodule> that is also a
    torchvision.ops name (the rule), or that the submodule itself defines (ExtraFPNBlock,
    ConvNormActivation, LevelMapper...: imported from there by users)."""
    cases = []
    for sub in _submodules():
        module = sys.modules[f"{tv.__name__}.{sub}"]
        for name in _public(module):
            defined_there = getattr(getattr(module, name), "__module__", None) == module.__name__
            if (hasattr(tv, name) or defined_there) and (sub, name) not in NOT_API:
                cases.append((sub, name))
    return cases


def _parameters(obj):
    target = obj.__init__ if inspect.isclass(obj) else obj
    return list(inspect.signature(target).parameters.values())


def _same_default(a, b):
    return a is b or (type(a) is type(b) and a == b)


def assert_same_signature(ours, theirs, what):
    """Ours takes torchvision's parameters (names, kinds, defaults, in order), plus at most
    keyword-only parameters with defaults at the end."""
    assert inspect.isclass(ours) == inspect.isclass(theirs), f"{what}: a class in one, not in the other"
    mine, reference = _parameters(ours), _parameters(theirs)
    expected = [(p.name, p.kind, p.default) for p in reference]
    got = [(p.name, p.kind, p.default) for p in mine[: len(reference)]]
    for (name, kind, default), (our_name, our_kind, our_default) in zip(expected, got):
        assert (our_name, our_kind) == (name, kind), f"{what}: parameters {got} but torchvision's are {expected}"
        assert _same_default(our_default, default), f"{what}: {name}={our_default!r}, torchvision's ={default!r}"
    assert len(got) == len(expected), f"{what}: parameters {got} but torchvision's are {expected}"
    for extra in mine[len(reference) :]:
        assert extra.kind is inspect.Parameter.KEYWORD_ONLY and extra.default is not inspect.Parameter.empty, (
            f"{what}: extra parameter {extra} must be keyword-only with a default"
        )


@pytest.mark.parametrize("name", _public(tv) if tv is not None else [])
def test_name(name):
    theirs = getattr(tv, name)
    assert hasattr(detops, name), f"detops lacks torchvision.ops.{name}"
    ours = getattr(detops, name)
    if inspect.ismodule(theirs):
        assert inspect.ismodule(ours) and ours.__name__ == f"detops.{name}", f"detops.{name} is not the submodule"
    else:
        assert_same_signature(ours, theirs, f"detops.{name}")


@pytest.mark.parametrize("submodule", _submodules())
def test_submodule(submodule):
    try:
        importlib.import_module(f"detops.{submodule}")
    except ImportError as error:
        pytest.fail(f"detops has no submodule {submodule} (torchvision.ops.{submodule}): {error}")


@pytest.mark.parametrize("submodule, name", _submodule_names())
def test_submodule_name(submodule, name):
    theirs = getattr(sys.modules[f"{tv.__name__}.{submodule}"], name)
    try:
        ours_module = importlib.import_module(f"detops.{submodule}")
    except ImportError:
        pytest.fail(f"detops has no submodule {submodule}, so no detops.{submodule}.{name}")
    assert hasattr(ours_module, name), f"detops.{submodule} lacks {name} (torchvision.ops.{submodule}.{name})"
    assert_same_signature(getattr(ours_module, name), theirs, f"detops.{submodule}.{name}")


def test_same_objects_under_both_names():
    # a name in a submodule and at the top is one object, as in torchvision
    for submodule, name in _submodule_names():
        if hasattr(tv, name) and hasattr(detops, name):
            try:
                module = importlib.import_module(f"detops.{submodule}")
            except ImportError:
                continue  # reported by test_submodule
            if hasattr(module, name):
                assert getattr(module, name) is getattr(detops, name), f"detops.{submodule}.{name}"
    import detops_nms

    assert detops.masks_to_boxes is detops_nms.masks_to_boxes is detops.boxes.masks_to_boxes


def test_the_check_can_fail():
    def narrower(boxes, scores):
        pass

    def other_default(boxes, scores, iou_threshold=0.5):
        pass

    def positional_extra(boxes, scores, iou_threshold, max_output=None):
        pass

    for wrong in (narrower, other_default, positional_extra):
        with pytest.raises(AssertionError):
            assert_same_signature(wrong, tv.nms, "nms")
    assert_same_signature(detops.nms, tv.nms, "nms")  # max_output: keyword-only, with a default
