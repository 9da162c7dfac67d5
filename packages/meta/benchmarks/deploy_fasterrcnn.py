"""Faster R-CNN inference on the CPU, four ways, in one interleaved loop: eager torchvision,
eager on detops (detops.use_detops), the AOTInductor package of detops.export_detector's
program, and that program in ONNX Runtime (detops.onnx.export, CPU execution provider).

    python packages/meta/benchmarks/deploy_fasterrcnn.py --threads 2

Random weights (nothing downloaded), torchvision's default sizes (min_size 800, max_size
1333) unless told otherwise. Each round calls the four once, in turn, so all see the same
machine state; the table gives each one's median. Not a `bench_*.py` file: tools/bench.py's
cases compare two callables, and compiling the package takes minutes, too long for
`nox -s bench`. Prints the one-off costs (export, compile) too.
"""

import argparse
import os
import statistics
import tempfile
import time

import torch


def _timed(label, fn):
    start = time.perf_counter()
    result = fn()
    print(f"{label}: {time.perf_counter() - start:.1f} s", flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-size", type=int, default=800)
    parser.add_argument("--max-size", type=int, default=1333)
    parser.add_argument("--height", type=int, default=480, help="input image height (resized by the model)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--seconds", type=float, default=60.0, help="keep interleaving at least this long")
    parser.add_argument("--rounds", type=int, default=5, help="and at least this many rounds")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import onnxruntime
    import torchvision
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    import detops
    import detops.onnx

    torch.manual_seed(0)
    model = fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=args.min_size, max_size=args.max_size
    ).eval()
    image = torch.rand(3, args.height, args.width, generator=torch.Generator().manual_seed(1))

    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        program = _timed("torch.export (detops.export_detector)", lambda: detops.export_detector(model, [image]))
        package = _timed(
            "AOTInductor compile (aoti_compile_and_package)",
            lambda: torch._inductor.aoti_compile_and_package(program, package_path=os.path.join(tmp, "frcnn.pt2")),
        )
        aoti = torch._inductor.aoti_load_package(package)
        onnx_program = _timed("ONNX export (detops.onnx.export)", lambda: detops.onnx.export(program, ([image],)))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            onnx_program.model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        feed = {session.get_inputs()[0].name: image.numpy()}

        def eager_detops():
            with detops.use_detops(model):
                return model([image])

        paths = [
            ("eager torchvision", lambda: model([image])),
            ("eager on detops", eager_detops),
            ("AOTInductor on detops", lambda: aoti([image])),
            ("ONNX Runtime on detops", lambda: session.run(None, feed)),
        ]
        counts = [len(fn()[0]["boxes"]) for _, fn in paths[:3]] + [len(paths[3][1]()[0])]
        print("detections per path:", counts, flush=True)
        times = {name: [] for name, _ in paths}
        start = time.perf_counter()
        while len(times[paths[0][0]]) < args.rounds or time.perf_counter() - start < args.seconds:
            for name, fn in paths:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)

    base = statistics.median(times[paths[0][0]])
    cpu = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")][:1]
    lines = [
        f"Faster R-CNN ResNet-50 FPN (random weights, {counts[0]} detections), one {args.height}x{args.width} "
        f"image resized to min_size {args.min_size} / max_size {args.max_size}; {args.threads} thread(s) "
        f"on {cpu[0] if cpu else 'unknown CPU'} ({os.cpu_count()} cores); torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, onnxruntime {onnxruntime.__version__}; "
        f"median of {len(times[paths[0][0]])} interleaved rounds.",
        "",
        "| path | median ms | vs eager torchvision |",
        "|---|---:|---:|",
    ]
    for name, _ in paths:
        median = statistics.median(times[name])
        lines.append(f"| {name} | {median * 1e3:.0f} | {base / median:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
