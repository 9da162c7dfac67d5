"""Each native package keeps its ops in a plain shared library, lib<package>_ops.so, that a
program without Python can load (examples/cpp runs an AOTInductor package with them)."""

import json
import subprocess
import sys

import pytest

import detops_core

# Package and one op it registers.
NATIVE = {
    "detops_nms": "nms",
    "detops_roi": "roi_align",
    "detops_deform": "deform_conv2d",
    "detops_deform_attn": "multi_scale_deformable_attention",
    "detops_fpn": "fpn_upsample_add",
}


@pytest.mark.parametrize("package", sorted(NATIVE))
def test_ops_library_needs_no_python(package):
    library = detops_core.native_libraries(package)[0]
    assert library.endswith(f"lib{package}_ops.so")
    undefined = subprocess.run(["nm", "-D", "--undefined-only", library], capture_output=True, text=True, check=True)
    assert [s for s in undefined.stdout.split() if s.startswith("Py")] == []


_LOAD_ALONE = """
import json, sys, torch
import detops_core
found = {}
for package, op in json.loads(sys.argv[1]).items():
    for library in detops_core.native_libraries(package):
        torch.ops.load_library(library)
    found[package] = hasattr(torch.ops.detops, op)
assert not [m for m in sys.modules if m.split(".")[0] in found], "a package's Python code was imported"
print(json.dumps(found))
"""


def test_ops_libraries_register_the_ops_without_the_python_packages():
    # A fresh interpreter: the libraries alone (ops library, then _C_cuda.so on a CUDA torch),
    # neither the packages' Python code nor their `_C` modules.
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_ALONE, json.dumps(NATIVE)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {package: True for package in NATIVE}


def test_build_info_names_the_ops_library():
    import detops_nms

    info = detops_nms.build_info()
    assert info["package"] == "detops_nms"
    assert info["ops_library"] == "libdetops_nms_ops.so"
