"""ONNX Runtime against OpenVINO on the same ONNX artifacts, on the CPU (JSON on stdout).

Each artifact (``--models``: the deploy's ``ssd300_{fp32,fp16,int8,end2end}.onnx``) is run in three
configurations: ONNX Runtime; OpenVINO held to FP32 for the float parts (``inference_precision="f32"``,
the backend's default, what the deploy and the parity check use); OpenVINO at the CPU plugin's own
default hint (``bf16`` on CPUs with AVX-512 BF16 or AMX, else ``f32``). Both runtimes get the same
thread count (``--threads``, default: every core), stated in the report.

- mAP: :func:`ssd_runtime.evaluate.map_of_detector_on_records` on the test split of ``--data`` (VOC07
  11-point, the model's evaluation settings), and PyTorch's with ``--checkpoint``: the INT8 loss as each
  reader sees it, and the gap between the two readers.
- speed: :func:`ssd_runtime.bench.benchmark` (the Detector pipeline: preprocess, inference, NumPy
  postprocess at the detection settings) on the first test images, batch 1 and 8. The configurations of
  an artifact are alternated ``--repeats`` times (the order reversed every repeat, so a load change on a
  shared machine falls on all of them); per configuration the median over repeats of each repeat's p50,
  and the ratios OpenVINO / ONNX Runtime in images/s (> 1: OpenVINO faster) as the median of the
  per-repeat ratios, computed in this run.

    python -m benchmarks.openvino --models runs/quickstart/deploy/ssd300_*.onnx --data runs/quickstart/data \\
        [--checkpoint runs/quickstart/train/last.pt] [--batch-sizes 1 8] [--threads N] [--out FILE]
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import time
from pathlib import Path

from benchmarks.common import cpu_facts, cpu_name, loadavg, print_report


def plugin_default_hint() -> str:
    """The precision OpenVINO's CPU plugin picks for float parts when not told (``bf16``, ``f32``, ``f16``)."""
    import openvino as ov

    hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    return {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}.get(hint.get_type_name(), hint.get_type_name())


def configurations(threads: int) -> list[tuple[str, str, dict]]:
    """(label, backend, options) of each run: ONNX Runtime, OpenVINO at f32, OpenVINO at its plugin's default."""
    runs = [("onnxruntime", "onnxruntime", {"intra_op_threads": threads}),
            ("openvino-f32", "openvino", {"intra_op_threads": threads, "inference_precision": "f32"})]
    default = plugin_default_hint()
    if default != "f32":  # on a CPU without BF16 the plugin's default is the f32 run above
        runs.append((f"openvino-{default}", "openvino", {"intra_op_threads": threads, "inference_precision": default}))
    return runs


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def time_artifact(detectors: dict, batch_sizes: list[int], images: list, *, warmup: int, iterations: int,
                  repeats: int) -> dict:
    """Per configuration and batch: the median over repeats of end-to-end and inference p50 (ms) and images/s;
    the alternation and its per-repeat p50s, for the ratios."""
    from ssd_runtime.bench import benchmark

    per_repeat: dict[str, list[dict]] = {label: [] for label in detectors}
    labels = list(detectors)
    for repeat in range(repeats):
        for label in labels if repeat % 2 == 0 else labels[::-1]:
            report = benchmark(detectors[label], batch_sizes, warmup=warmup, iterations=iterations, images=images)
            per_repeat[label].append({e["batch_size"]: e["stages"] for e in report["results"]})
    timing = {}
    for label, repeats_of in per_repeat.items():
        timing[label] = {str(b): {
            "end_to_end_p50_ms": round(_median([r[b]["end_to_end"]["p50_ms"] for r in repeats_of]), 3),
            "inference_p50_ms": round(_median([r[b]["inference"]["p50_ms"] for r in repeats_of]), 3),
            "images_per_s": round(b * 1e3 / _median([r[b]["end_to_end"]["p50_ms"] for r in repeats_of]), 2),
        } for b in batch_sizes}
    return {"timing": timing, "per_repeat": per_repeat}


def ratios(per_repeat: dict[str, list[dict]], batch_sizes: list[int]) -> dict:
    """OpenVINO / ONNX Runtime speed (images/s, end to end and inference alone): the median of per-repeat ratios."""
    base = per_repeat["onnxruntime"]
    out = {}
    for label, runs in per_repeat.items():
        if label == "onnxruntime":
            continue
        out[f"{label}/onnxruntime"] = {str(b): {
            stage: round(_median([o[b][stage]["p50_ms"] / r[b][stage]["p50_ms"] for o, r in zip(base, runs)]), 3)
            for stage in ("end_to_end", "inference")} for b in batch_sizes}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="ONNX artifacts (the deploy's ssd300_*.onnx)")
    parser.add_argument("--data", required=True, help="VOC root or generated dataset: its test split")
    parser.add_argument("--checkpoint", help="the .pt they were exported from: PyTorch's mAP beside (optional)")
    parser.add_argument("--max-images", type=int, default=0, help="mAP on the first N test images (0: all)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="both runtimes' threads (default: every core)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the configurations per artifact")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)

    from ssd_runtime.detector import Detector
    from ssd_runtime.evaluate import map_of_detector_on_records
    from ssd_runtime.voc import read_voc_split

    runs = configurations(args.threads)
    report: dict = {
        "benchmark": "openvino", "cpu": cpu_name(), "cpu_facts": cpu_facts(), "loadavg_start": loadavg(),
        "versions": {p: importlib.metadata.version(p) for p in ("onnxruntime", "openvino", "numpy")},
        "threads": args.threads, "batch_sizes": args.batch_sizes, "warmup": args.warmup,
        "iterations": args.iterations, "repeats": args.repeats,
        "configurations": {label: {"backend": backend, **options} for label, backend, options in runs},
        "artifacts": {},
    }
    first = Detector.load(args.models[0])
    records = read_voc_split(args.data, "test", first.spec.class_names, max_images=args.max_images)
    images = [r.image_path for r in records[:max(args.batch_sizes)]]
    report.update(map_images=len(records), timing_images=f"the first {len(images)} test images")
    if args.checkpoint:
        result, _ = map_of_detector_on_records(Detector.load(args.checkpoint, "torch"), records)
        report["pytorch_map"] = result.map
    start = time.perf_counter()
    for model in map(Path, args.models):
        detectors = {label: Detector.load(model, backend, **options) for label, backend, options in runs}
        entry: dict = {"path": str(model), "variant": detectors["onnxruntime"].backend.variant,
                       "options": {label: d.backend.options for label, d in detectors.items()}, "map": {}}
        for label, detector in detectors.items():
            entry["map"][label] = map_of_detector_on_records(detector, records)[0].map
            print(f"{model.name} {label}: mAP {entry['map'][label]:.4f}", file=sys.stderr)
        timed = time_artifact(detectors, args.batch_sizes, images, warmup=args.warmup, iterations=args.iterations,
                              repeats=args.repeats)
        entry["timing"] = timed["timing"]
        entry["ratios"] = ratios(timed["per_repeat"], args.batch_sizes)
        entry["map_gap_points"] = {f"{label}-onnxruntime": round((m - entry["map"]["onnxruntime"]) * 100, 3)
                                   for label, m in entry["map"].items() if label != "onnxruntime"}
        if "pytorch_map" in report:
            entry["delta_points"] = {label: round((m - report["pytorch_map"]) * 100, 3) for label, m in entry["map"].items()}
        print(f"{model.name}: {entry['ratios']}", file=sys.stderr)
        report["artifacts"][model.stem.removeprefix("ssd300_")] = entry
        for detector in detectors.values():
            detector.backend.close()
    report.update(seconds=round(time.perf_counter() - start, 1), loadavg_end=loadavg())
    print_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
