"""The C++ example end to end: an AOTInductor package of a model calling detops ops, made
here in Python, run by examples/cpp's program (libtorch and the detops ops libraries, no
Python), compared with eager PyTorch and with the same package loaded in Python.

    python -m pytest examples/cpp        (python3 -m nox -s cpp builds what it needs first)

The program is built with CMake in build/cpp-example (kept: a rebuild is a no-op).
Tolerances: the program's outputs equal those of the package loaded in Python exactly (same
compiled code; floats are printed with 9 significant digits, which read back as the same
float32). Against eager, for the small model: labels and the kept boxes exact, scores within
rtol 1e-5, atol 1e-6 (inductor's generated softmax may round differently from eager's); for
Faster R-CNN (random weights, one 128x160 image, made exportable by `detops.exportable`): as many
detections, each with an eager one of the same label, score within 1e-4 and box within
1e-2 px (measured: 2e-5 and 5e-3; AOTInductor's convolutions round differently, and near
ties in score swap places).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, "build", "cpp-example")
PROGRAM = os.path.join(BUILD, "detops_aoti_run")


def _make_package_module():
    spec = importlib.util.spec_from_file_location("detops_cpp_make_package", os.path.join(HERE, "make_package.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_package = _make_package_module()


def _cmake() -> str:
    # The cmake next to the interpreter (pip's, new enough) before the system's.
    local = os.path.join(os.path.dirname(sys.executable), "cmake")
    return local if os.path.exists(local) else shutil.which("cmake") or pytest.fail("no cmake")


@pytest.fixture(scope="module")
def program() -> str:
    start = time.perf_counter()
    if not os.path.exists(os.path.join(BUILD, "CMakeCache.txt")):
        ninja = shutil.which("ninja") or os.path.exists(os.path.join(os.path.dirname(sys.executable), "ninja"))
        generator = ["-G", "Ninja"] if ninja else []
        subprocess.run(
            [_cmake(), "-S", HERE, "-B", BUILD, *generator, f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"],
            check=True,
        )
    subprocess.run([_cmake(), "--build", BUILD], check=True)
    print(f"[cpp] example built in {time.perf_counter() - start:.1f} s")
    return PROGRAM


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("tiny"))
    times = make_package.make(out, "tiny")
    print("[cpp] " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    return out


def parse_outputs(stdout: str) -> list[torch.Tensor]:
    """The `output <i> <dtype> <shape> : <values>` lines the program prints, as tensors."""
    tensors = []
    for line in stdout.splitlines():
        if not line.startswith("output "):
            continue
        head, _, values = line.partition(" : ")
        _, index, dtype, shape = head.split()
        assert int(index) == len(tensors)
        dims = [] if shape == "scalar" else [int(d) for d in shape.split("x")]
        dtype = getattr(torch, dtype.lower()) if dtype != "Long" else torch.int64
        wide = torch.float64 if dtype.is_floating_point else torch.int64
        numbers = [float(v) if dtype.is_floating_point else int(v) for v in values.split()]
        tensors.append(torch.tensor(numbers, dtype=wide).to(dtype).reshape(dims))
    return tensors


def run_program(program: str, package: str, libraries: list[str]) -> subprocess.CompletedProcess:
    # No PYTHON* variables: nothing of Python reaches the program.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["DETOPS_OPS_LIBRARIES"] = ":".join(libraries)
    return subprocess.run(
        [program, os.path.join(package, "model.pt2"), os.path.join(package, "inputs.pt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_program_needs_no_python(program):
    needed = subprocess.run(["readelf", "-d", program], capture_output=True, text=True, check=True).stdout
    assert "libpython" not in needed
    for lib in make_package.libraries("tiny"):
        nm = ["nm", "-D", "--undefined-only", lib]
        undefined = subprocess.run(nm, capture_output=True, text=True, check=True).stdout
        assert not [s for s in undefined.split() if s.startswith("Py")], lib


def test_tiny_model_matches_python(program, tiny_package):
    done = run_program(program, tiny_package, make_package.libraries("tiny"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loaded" in done.stdout and "libdetops_nms_ops.so (detops_nms" in done.stdout
    outputs = parse_outputs(done.stdout)

    expected = torch.load(os.path.join(tiny_package, "expected.pt"))
    inputs = torch.load(os.path.join(tiny_package, "inputs.pt"))
    assert len(outputs) == len(expected) == 3
    assert expected[0].shape[0] > 1  # some proposals kept, some suppressed
    assert expected[0].shape[0] < inputs[1].shape[0]
    boxes, scores, labels = outputs
    torch.testing.assert_close(boxes, expected[0], rtol=0, atol=0)
    torch.testing.assert_close(labels, expected[2], rtol=0, atol=0)
    torch.testing.assert_close(scores, expected[1], rtol=1e-5, atol=1e-6)

    in_python = torch._inductor.aoti_load_package(os.path.join(tiny_package, "model.pt2"))(*inputs)
    for got, want in zip(outputs, in_python):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.fixture(scope="module")
def fasterrcnn_package(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("fasterrcnn"))
    times = make_package.make(out, "fasterrcnn")
    print("[cpp] Faster R-CNN " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    return out


def test_fasterrcnn_matches_python(program, fasterrcnn_package):
    start = time.perf_counter()
    done = run_program(program, fasterrcnn_package, make_package.libraries("fasterrcnn"))
    print(f"[cpp] Faster R-CNN package loaded and run from C++ in {time.perf_counter() - start:.1f} s")
    assert done.returncode == 0, done.stdout + done.stderr
    boxes, scores, labels = parse_outputs(done.stdout)

    inputs = torch.load(os.path.join(fasterrcnn_package, "inputs.pt"))
    in_python = torch._inductor.aoti_load_package(os.path.join(fasterrcnn_package, "model.pt2"))(*inputs)
    for got, want in zip((boxes, scores, labels), in_python):
        torch.testing.assert_close(got, want, rtol=0, atol=0)

    want_boxes, want_scores, want_labels = torch.load(os.path.join(fasterrcnn_package, "expected.pt"))
    assert boxes.shape[0] == want_boxes.shape[0] > 0
    for box, score, label in zip(boxes, scores, labels):
        close = (
            (want_labels == label) & ((want_scores - score).abs() <= 1e-4) & ((want_boxes - box).abs().amax(1) <= 1e-2)
        )
        assert close.any(), f"no eager detection near {box.tolist()} {score.item()} {label.item()}"


def test_missing_library_is_named(program, tiny_package):
    done = run_program(program, tiny_package, ["/nonexistent/libdetops_nms_ops.so"])
    assert done.returncode != 0
    assert "/nonexistent/libdetops_nms_ops.so" in done.stderr
