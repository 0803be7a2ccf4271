"""CPU benchmark of the runtime (JSON on stdout): ONNX Runtime and PyTorch backends, NumPy and torch postprocess.

A randomly initialised SSD300 (VOC classes, ``--width``, default the full 1.0 network) is saved as a
checkpoint and exported to ONNX (fp32); each (backend, postprocess) pair is timed by
:func:`ssd_runtime.bench.benchmark` at batch 1 and 8 on VOC-sized (500x375) images at the detection
settings. Random weights detect nothing above min_score 0.2, so the postprocess column is its
floor (softmax + candidate scan); ``benchmarks/postprocess.py`` times it on trained-looking outputs.

    python -m benchmarks.runtime_cpu [--width 1.0] [--batch-sizes 1 8] [--iterations 10] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)

    import onnxruntime
    import torch

    from ssd_export.onnx.export import export_onnx
    from ssd_runtime import Detector
    from ssd_runtime.bench import benchmark
    from ssd_runtime.detector import POSTPROCESSES
    from ssd_runtime.spec import ModelSpec
    from ssd_train.checkpoint import save_checkpoint
    from ssd_train.model import SSD300

    report = {"benchmark": "runtime_cpu", "machine": platform.processor() or platform.machine(),
              "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
              "onnxruntime": onnxruntime.__version__, "width": args.width, "runs": []}
    with tempfile.TemporaryDirectory(prefix="runtime-bench-") as tmp:
        torch.manual_seed(0)
        spec = ModelSpec.create(width=args.width)
        checkpoint = save_checkpoint(Path(tmp) / "ssd300.pt", SSD300.from_spec(spec), spec)
        onnx_path = Path(tmp) / "ssd300.onnx"
        start = time.perf_counter()
        export_onnx(checkpoint, onnx_path, verify=False)
        report["export_seconds"] = round(time.perf_counter() - start, 2)
        for model in (onnx_path, checkpoint):
            for postprocess in POSTPROCESSES:
                detector = Detector.load(model, postprocess=postprocess)
                run = benchmark(detector, args.batch_sizes, warmup=args.warmup, iterations=args.iterations)
                report["runs"].append(run)
                e2e = [(r["batch_size"], r["stages"]["end_to_end"]["p50_ms"]) for r in run["results"]]
                print(f"{run['backend']} + {postprocess}: end-to-end p50 ms by batch {e2e}", file=sys.stderr)
    text = json.dumps(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
