"""The shipped Python code uses public torch APIs only, so one build keeps working on torch
releases that move torch's internals (the test toolkit, detops_core.testing, may use what
tests need). torch._check is public despite its name (it is in torch's documentation)."""

import importlib
import pathlib
import re

import pytest

PACKAGES = ["detops_core", "detops_nms", "detops_roi", "detops_deform", "detops_deform_attn", "detops_fpn", "detops"]

PRIVATE = [
    # torch._C, torch._dynamo, torch.nn.modules.utils._pair; not detops' own torch.ops.detops._*
    re.compile(r"\btorch(?!\.ops\.)(\.[A-Za-z]\w*)*\._(?!check\b)\w+"),
    re.compile(r"\bfrom torch(\.\w+)* import _\w+"),
    re.compile(r"\._schema\b|\bpy_impl\b|\bpy_kernels\b"),  # OpOverload internals
]


def _sources(package):
    try:
        module = importlib.import_module(package)
    except ImportError:
        pytest.skip(f"{package} is not installed")
    root = pathlib.Path(module.__file__).parent
    return [p for p in root.rglob("*.py") if "testing" not in p.relative_to(root).parts]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_private_torch_api(package):
    found = []
    for path in _sources(package):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            found += [f"{path.name}:{number}: {line.strip()}" for pattern in PRIVATE if pattern.search(code)]
    assert not found, "private torch API in shipped code:\n" + "\n".join(found)
