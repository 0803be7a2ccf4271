"""Which INT8 layout ONNX Runtime runs fastest on this CPU (JSON on stdout).

The toolkit's INT8 model is the TensorRT-compatible layout: symmetric INT8 activations and weights
(S8S8), per-channel, Q/DQ. ONNX Runtime's CPU kernels may prefer uint8 activations (U8S8, which
TensorRT refuses); a separate ONNX-Runtime-only output is only worth offering where it is measurably
faster. This times, in one process and interleaved, ONNX Runtime's own ``quantize_static`` outputs of
a full-width SSD300 (random weights: speed does not depend on them) in both layouts against FP32 at
batch 1. (QOperator U8S8 is not tried: ORT's QOperator Conv needs the bias as a graph initializer, and
the TorchScript export routes it through an Identity.)

    python -m benchmarks.int8_layouts [--repeats 7] [--threads 2] [--out FILE]
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import cpu_facts, loadavg, print_report


def _calibration_reader(images: np.ndarray, batch: int):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": images[i : i + batch]} for i in range(0, len(images), batch)])

        def get_next(self):
            return next(self.batches, None)

    return Reader()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from ssd_export.onnx.export import export_onnx
    from ssd_export.parity import verification_inputs
    from ssd_runtime.spec import ModelSpec
    from ssd_train.checkpoint import save_checkpoint
    from ssd_train.model import SSD300

    layouts = {
        "s8s8_qdq (TensorRT-compatible, the toolkit's)": dict(
            activation_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}),
        "u8s8_qdq (ONNX Runtime only)": dict(activation_type=QuantType.QUInt8, extra_options={"WeightSymmetric": True}),
    }
    logging.disable(logging.WARNING)  # ORT's quantizer warns per node
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = ModelSpec.create(("background", *(f"class{i}" for i in range(20))), width=1.0)
        torch.manual_seed(0)
        save_checkpoint(folder / "m.pt", SSD300(num_classes=21).eval(), spec)
        export_onnx(folder / "m.pt", folder / "fp32.onnx", verify=False)
        _, images = verification_inputs(spec, args.calib_images, seed=1)
        paths, quantize_s = {"fp32": folder / "fp32.onnx"}, {}
        for name, settings in layouts.items():
            paths[name] = folder / f"{len(paths)}.onnx"
            start = time.perf_counter()
            quantize_static(str(folder / "fp32.onnx"), str(paths[name]), _calibration_reader(images, 4),
                            quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=CalibrationMethod.MinMax, **settings)
            quantize_s[name] = round(time.perf_counter() - start, 1)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
        batch = images[:1]
        for session in sessions.values():
            for _ in range(2):
                session.run(None, {"images": batch})
        load_before = loadavg()
        seconds: dict[str, list[float]] = {k: [] for k in sessions}
        for repeat in range(args.repeats):  # interleaved, the order flipped every repeat
            for name in list(sessions) if repeat % 2 == 0 else list(sessions)[::-1]:
                start = time.perf_counter()
                sessions[name].run(None, {"images": batch})
                seconds[name].append(time.perf_counter() - start)
    p50 = {k: float(np.median(v)) * 1000 for k, v in seconds.items()}
    report = {
        "benchmark": "int8_layouts", "batch": 1, "threads": args.threads, "repeats": args.repeats,
        "cpu": cpu_facts(), "onnxruntime": ort.__version__,
        "loadavg_before": load_before, "loadavg_after": loadavg(),
        "quantize_seconds": quantize_s,
        "p50_ms": {k: round(v, 1) for k, v in p50.items()},
        "speedup_vs_fp32": {k: round(p50["fp32"] / v, 2) for k, v in p50.items()},
    }
    print_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
