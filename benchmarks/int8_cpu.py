"""INT8 Q/DQ vs FP32 in ONNX Runtime on the CPU, full-width SSD300 (JSON on stdout).

In a temporary folder: a full-width SSD300 (random weights unless ``--checkpoint``) is saved as a
checkpoint and exported to ONNX fp32 (:func:`ssd_export.onnx.export.export_onnx`), a calibration set
is built from a generated dataset (``ssd_train.synthetic``; or ``--calibration M [--data-root D]``)
and the export is quantized by :func:`ssd_export.int8.quantize.quantize_int8` (``--method``, default max;
parity off). The class list of the model must be the calibration set's: by default the generated
dataset's 7 shapes padded with unused names to ``--num-classes`` (21 with background, VOC's head
shape). The INT8 model's speed does not depend on the calibration count or the weights; the
quantization time does (about one fp32 inference per calibration image, plus the range collection).

Timing (after warm-up, both models in one process, alternated every repeat, the order flipped each
repeat): inference is ``OrtBackend.infer`` on one preprocessed batch (``intra_op_threads`` = the
core count); end to end is ``Detector`` preprocess (VOC-sized 500x375 images) + infer + NumPy
postprocess at the detection settings + pixel conversion. Reported per batch and model: p50 / p90 ms,
images/s (batch / p50) and the speed ratio int8/fp32 (fp32 p50 / int8 p50; also the median of the
per-repeat ratios). ``ssd-runtime bench`` is run once on the INT8 model as a cross-check.

    python -m benchmarks.int8_cpu [--batch-sizes 1 8] [--repeats 7] [--calib-images 64] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import cpu_facts, loadavg

def smooth_images(count: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    """Deterministic VOC-sized RGB scenes (upsampled noise; the resize cost of real photos)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    return [np.asarray(Image.fromarray(rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8))
                       .resize((width, height), Image.BILINEAR)) for _ in range(count)]


def stats(seconds: list[float], batch: int) -> dict:
    ms = np.asarray(seconds) * 1e3
    p50 = float(np.percentile(ms, 50))
    return {"p50_ms": round(p50, 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "min_ms": round(float(ms.min()), 2), "images_per_s": round(batch * 1e3 / p50, 2), "n": len(ms)}


def interleaved(fns: dict, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Warm each fn up, then time them alternately; the order is flipped every repeat."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def end_to_end(detector, images: list[np.ndarray], settings) -> list:
    """Detector preprocess + inference + NumPy postprocess + pixel conversion (as ``ssd_runtime.bench``)."""
    prepared = detector.prepare(images)
    dets = detector.fractional_detections(prepared.pixels, settings)
    return [detector.to_image_detections(d, w, h) for d, (w, h) in zip(dets, prepared.sizes)]


def compare(times: dict[str, list[float]], batch: int) -> dict:
    fp32, int8 = np.asarray(times["fp32"]), np.asarray(times["int8"])
    return {
        "fp32": stats(times["fp32"], batch),
        "int8": stats(times["int8"], batch),
        "speedup_int8_over_fp32": round(float(np.median(fp32) / np.median(int8)), 3),
        "speedup_per_repeat_median": round(float(np.median(fp32 / int8)), 3),
    }


def optimized_op_counts(path: Path, out: Path, threads: int) -> dict[str, int]:
    """Node types of the graph ONNX Runtime actually runs (after its optimizations: Q/DQ -> QLinearConv ...)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    counts: dict[str, int] = {}
    for node in onnx.load(str(out), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    out.unlink()
    for extra in out.parent.glob(out.name + "*"):
        extra.unlink()
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def cli_bench(model: Path, iterations: int) -> dict:
    """``ssd-runtime bench --model int8.onnx`` once (batch 1, its own defaults otherwise): p50 cross-check."""
    exe = shutil.which("ssd-runtime", path=str(Path(sys.executable).parent)) or shutil.which("ssd-runtime")
    command = [exe or "ssd-runtime", "bench", "--model", str(model), "--batch-sizes", "1",
               "--iterations", str(iterations), "--json"]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    result = {"command": "ssd-runtime bench --model int8.onnx --batch-sizes 1 "
                         f"--iterations {iterations} --json", "returncode": proc.returncode,
              "seconds": round(time.perf_counter() - start, 1)}
    if proc.returncode != 0:
        result["stderr_tail"] = proc.stderr[-2000:]
        return result
    report = json.loads(proc.stdout)
    entry = report["results"][0]
    result.update({
        "backend": report["backend"], "variant": report["options"].get("variant"),
        "warmup": report["warmup"], "iterations": report["iterations"],
        "inference_p50_ms": entry["stages"]["inference"]["p50_ms"],
        "end_to_end_p50_ms": entry["stages"]["end_to_end"]["p50_ms"],
        "note": "ORT's default intra-op threads (the CLI has no thread flag); not interleaved with fp32",
    })
    return result


def padded_class_names(base: tuple[str, ...], num_classes: int) -> tuple[str, ...]:
    if num_classes < len(base):
        raise SystemExit(f"--num-classes {num_classes} is below the generated dataset's {len(base)} classes")
    return (*base, *(f"unused{i:02d}" for i in range(num_classes - len(base))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a toolkit checkpoint (default: a random full-width SSD300)")
    parser.add_argument("--calibration", help="a calibration manifest (ssd-export calibration); default: "
                        "built from a generated dataset")
    parser.add_argument("--data-root", help="where --calibration's dataset is now")
    parser.add_argument("--calib-images", type=int, default=64, help="generated calibration images (the INT8 "
                        "model's speed does not depend on it; the quantization time does)")
    parser.add_argument("--method", default="max", help="quantize_int8 calibration method")
    parser.add_argument("--num-classes", type=int, default=21, help="random model: classes with background "
                        "(the generated shapes padded with unused names)")
    parser.add_argument("--width", type=float, default=1.0, help="random model: network width")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="ORT intra-op threads")
    parser.add_argument("--verify", action="store_true", help="run the export's parity verification")
    parser.add_argument("--no-end-to-end", action="store_true", help="time inference only")
    parser.add_argument("--cli-iterations", type=int, default=10, help="ssd-runtime bench iterations (0: skip)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)

    import onnxruntime
    import torch

    from ssd_export.int8.calibration import build_manifest, write_manifest
    from ssd_export.int8.quantize import quantize_int8
    from ssd_export.onnx.export import export_onnx
    from ssd_runtime import Detector
    from ssd_runtime.backends.onnxruntime import OrtBackend
    from ssd_runtime.classes import CLASSES_FILE, write_class_file
    from ssd_runtime.spec import ModelSpec
    from ssd_train.checkpoint import load_checkpoint, save_checkpoint
    from ssd_train.model import SSD300
    from ssd_train.synthetic import CLASS_NAMES, generate_voc_dataset

    report: dict = {
        "benchmark": "int8_cpu",
        "cpu": cpu_facts(),
        "loadavg_before": loadavg(),
        "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__, "intra_op_threads": args.threads,
        "batch_sizes": args.batch_sizes, "warmup": args.warmup, "repeats": args.repeats,
        "timing": "interleaved fp32/int8 each repeat (order flipped every repeat), after warm-up; "
                  "speedup = fp32 p50 / int8 p50",
    }
    steps: dict = {}
    with tempfile.TemporaryDirectory(prefix="int8-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.checkpoint:
            checkpoint = Path(args.checkpoint)
            spec = load_checkpoint(checkpoint).spec
            report["model"] = {"source": "checkpoint", "path": str(checkpoint)}
        else:
            torch.manual_seed(0)
            data_names = CLASS_NAMES if args.calibration is None else None
            names = padded_class_names(data_names, args.num_classes) if data_names else None
            if names is None:  # a given calibration set: its class list
                names = tuple(json.loads(Path(args.calibration).read_text())["class_names"])
            spec = ModelSpec.create(names, width=args.width)
            checkpoint = save_checkpoint(tmp / "ssd300.pt", SSD300.from_spec(spec), spec)
            report["model"] = {"source": "random weights (torch.manual_seed(0)): speed only, detections "
                                         "meaningless"}
        report["model"].update({"width": spec.width, "num_classes": spec.num_classes,
                                "class_names": list(spec.class_names), "num_priors": spec.num_priors,
                                "parameters": sum(p.numel() for p in SSD300.from_spec(spec).parameters())})

        if args.calibration:
            manifest = Path(args.calibration)
            report["calibration"] = {"manifest": str(manifest), "data_root": args.data_root}
        else:
            start = time.perf_counter()
            data = tmp / "data"
            generate_voc_dataset(data, images=args.calib_images + 1, test=1)
            if tuple(spec.class_names) != CLASS_NAMES:
                if not set(CLASS_NAMES) <= set(spec.class_names):
                    raise SystemExit(f"the model's classes {list(spec.class_names)} do not include the generated "
                                     f"shapes {list(CLASS_NAMES[1:])}: pass --calibration (and --data-root)")
                write_class_file(data / CLASSES_FILE, spec.class_names)
            steps["generate_dataset_seconds"] = round(time.perf_counter() - start, 2)
            start = time.perf_counter()
            manifest = write_manifest(build_manifest(data, images=args.calib_images, spec=spec), tmp / "calib.json")
            steps["calibration_manifest_seconds"] = round(time.perf_counter() - start, 2)
            report["calibration"] = {"source": "ssd_train.synthetic.generate_voc_dataset (trainval) + "
                                               "ssd_export.int8.calibration.build_manifest",
                                     "images": args.calib_images,
                                     "class_list": "generated shapes padded with unused names"
                                                   if tuple(spec.class_names) != CLASS_NAMES else "generated"}

        fp32_path, int8_path = tmp / "ssd300.onnx", tmp / "ssd300_int8.onnx"
        start = time.perf_counter()
        export = export_onnx(checkpoint, fp32_path, verify=args.verify)
        steps["export_fp32_seconds"] = round(time.perf_counter() - start, 2)
        steps["export_verified"] = args.verify
        if export.verification is not None:
            steps["export_verification_passed"] = export.verification.get("passed")

        start = time.perf_counter()
        quant = quantize_int8(fp32_path, manifest, int8_path, method=args.method, parity=False,
                              data_root=args.data_root)
        quantize_seconds = time.perf_counter() - start
        report["quantization"] = {
            "function": f"ssd_export.int8.quantize.quantize_int8(method={args.method!r}, parity=False)",
            "seconds": round(quantize_seconds, 2),
            "quantize_static_seconds": quant["quantize_seconds"],
            "calibration_images": quant["calibration"]["images"],
            "calibration_batches": quant["calibration"]["batches"],
            "rules_violations": len(quant["rules"]["violations"]),
            "settings": {k: quant["settings"][k] for k in ("format", "activation_type", "weight_type",
                                                           "per_channel", "activation_symmetric", "method")},
        }
        report["sizes_bytes"] = {"checkpoint": checkpoint.stat().st_size, "fp32_onnx": fp32_path.stat().st_size,
                                 "int8_onnx": int8_path.stat().st_size}
        report["sizes_bytes"]["int8_over_fp32"] = round(report["sizes_bytes"]["int8_onnx"]
                                                         / report["sizes_bytes"]["fp32_onnx"], 3)
        report["ort_optimized_ops"] = {name: optimized_op_counts(path, tmp / f"{name}_opt.onnx", args.threads)
                                       for name, path in (("fp32", fp32_path), ("int8", int8_path))}
        report["steps"] = steps
        print(f"quantized in {quantize_seconds:.1f} s; timing ...", file=sys.stderr)

        backends = {name: OrtBackend(path, intra_op_threads=args.threads)
                    for name, path in (("fp32", fp32_path), ("int8", int8_path))}
        detectors = {name: Detector(b, postprocess="numpy") for name, b in backends.items()}
        settings = spec.detection
        report["end_to_end_settings"] = settings.to_dict()
        report["runs"] = []
        for batch in args.batch_sizes:
            images = smooth_images(batch, (500, 375), seed=batch)
            pixels = detectors["fp32"].prepare(images).pixels
            locs = {name: b.infer(pixels) for name, b in backends.items()}
            run = {"batch_size": batch, "inference": compare(interleaved(
                {name: (lambda b=b, x=pixels: b.infer(x)) for name, b in backends.items()}, args.warmup, args.repeats),
                batch)}
            run["outputs_max_abs_diff"] = {k: round(float(np.abs(locs["fp32"][i] - locs["int8"][i]).max()), 4)
                                           for i, k in enumerate(("locs", "class_logits"))}

            if not args.no_end_to_end:
                run["end_to_end"] = compare(interleaved(
                    {name: (lambda d=d, x=images: end_to_end(d, x, settings)) for name, d in detectors.items()},
                    1, args.repeats), batch)
            report["runs"].append(run)
            inf = run["inference"]
            print(f"batch {batch}: inference p50 fp32 {inf['fp32']['p50_ms']} ms, int8 {inf['int8']['p50_ms']} ms,"
                  f" x{inf['speedup_int8_over_fp32']}", file=sys.stderr)
        del backends, detectors
        if args.cli_iterations:
            report["ssd_runtime_bench_int8"] = cli_bench(int8_path, args.cli_iterations)
    report["loadavg_after"] = loadavg()
    report["target"] = {"int8_over_fp32_at_batch_1": 2.0}
    one = next((r for r in report["runs"] if r["batch_size"] == 1), None)
    if one is not None:
        report["target"]["measured_at_batch_1"] = one["inference"]["speedup_int8_over_fp32"]
        report["target"]["met"] = one["inference"]["speedup_int8_over_fp32"] >= 2.0
    text = json.dumps(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
