"""sigmoid_focal_loss against torchvision.ops.sigmoid_focal_loss, forward+backward (the
gradient of the logits, as in training) in float32, at RetinaNet's dense head size (120000
anchors x 80 classes: about 2 x 10^5 anchors of an 800x1216 image, less than a batch) and a
DETR-sized one (300 queries x 91 classes), for reduction "sum" (RetinaNet's, divided by the
positives afterwards) and "none"; the quick workloads are smaller. A third workload of 2 x 4
elements times what a call costs whatever its size (Python autograd layers, dispatch,
allocation), the floor under the 300 x 91 times.

Peak extra memory (bytes allocated beyond the inputs during forward+backward) is measured
apart from the timings, each implementation in a fresh subprocess, as the growth of the
process's resident-set high-water mark (Linux's VmHWM, reset with /proc/self/clear_refs
after the inputs exist); the tensors involved are all large, so glibc serves and returns
them with mmap and the high-water mark tracks torch's allocations:

    python packages/losses/benchmarks/bench_focal_loss.py --memory
"""

import argparse
import json
import os
import subprocess
import sys

import torch

import detops_losses

FULL = [("120000x80", (120000, 80)), ("300x91", (300, 91))]
FIXED_COST = [("2x4", (2, 4))]
QUICK = [("2000x80", (2000, 80)), ("300x91", (300, 91))]
REDUCTIONS = ("sum", "none")


def _inputs(shape, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g) * 3 - 4  # mostly confident negatives, as in training
    targets = (torch.rand(shape, generator=g) < 0.01).float()
    return logits.to(device), targets.to(device)


def _forward_backward(fn, logits, targets, reduction):
    x = logits.clone().requires_grad_()
    grad = (
        torch.ones(()) if reduction != "none" else torch.rand(logits.shape, generator=torch.Generator().manual_seed(1))
    )
    grad = grad.to(logits.device)

    def run():
        loss = fn(x, targets, reduction=reduction)
        return torch.autograd.grad(loss, [x], grad)

    return run


def _torchvision():
    from torchvision.ops import sigmoid_focal_loss

    return sigmoid_focal_loss


def cases(quick: bool, device: str = "cpu"):
    theirs_fn = _torchvision()
    for label, shape in QUICK if quick else FULL + FIXED_COST:
        logits, targets = _inputs(shape, device)
        for reduction in REDUCTIONS:
            ours = _forward_backward(detops_losses.sigmoid_focal_loss, logits, targets, reduction)
            theirs = _forward_backward(theirs_fn, logits, targets, reduction)
            torch.testing.assert_close(ours(), theirs(), rtol=1e-4, atol=1e-6)
            yield (f"sigmoid_focal_loss fwd+backward {reduction}", f"{label} float32", ours, theirs)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _measure_one(impl: str, shape, reduction: str) -> int:
    """Peak extra bytes of one forward+backward, in this process."""
    torch.set_num_threads(1)
    fn = detops_losses.sigmoid_focal_loss if impl == "detops" else _torchvision()
    logits, targets = _inputs(shape)
    run = _forward_backward(fn, logits, targets, reduction)
    run()  # warm up: one-time allocations (libraries, thread pools) happen here
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    before = _rss_kib("VmRSS")
    run()
    return (_rss_kib("VmHWM") - before) * 1024


def memory_table(shapes=FULL) -> str:
    rows = ["| workload | reduction | detops MiB | torchvision MiB | ratio |", "|---|---|---|---|---|"]
    for label, shape in shapes:
        for reduction in REDUCTIONS:
            got = {}
            for impl in ("detops", "torchvision"):
                code = (
                    f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
                    f"import bench_focal_loss as b; print(b._measure_one({impl!r}, {tuple(shape)!r}, {reduction!r}))"
                )
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                got[impl] = json.loads(out.stdout.strip().splitlines()[-1])
            ours, theirs = got["detops"] / 2**20, got["torchvision"] / 2**20
            rows.append(f"| {label} | {reduction} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.3f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory", action="store_true", help="print the peak extra memory table")
    if parser.parse_args().memory:
        print(memory_table())
