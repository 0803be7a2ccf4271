"""VOC mAP through the runtime, side by side with the PyTorch checkpoint the model came from.

The one metric (:func:`ssd_runtime.metric.voc_map`) and the one data reader
(:func:`ssd_runtime.voc.read_voc_split` + the safe image loader) serve both columns: the runtime
model and the checkpoint are run through the same :class:`~ssd_runtime.detector.Detector` pipeline
(batched preprocess -> backend -> postprocess at the spec's evaluation settings), so "parity"
compares the networks' detections, never two metrics. Ground truth is taken in fractions of the
decoded image size, as the PyTorch evaluation (``ssd_train.evaluation.evaluate``) does.

Targets (issue 6): |delta mAP| <= 0.05 point for FP32 models and <= 0.1 point for FP16 ones
(1 point = 0.01 on the 0-1 scale).
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ssd_runtime.detector import Detector
from ssd_runtime.metric import GroundTruth, VOCResult, voc_map
from ssd_runtime.detections import Detections
from ssd_runtime.voc import VOCRecord, fit_to_image, read_voc_split, split_roots

__all__ = ["TARGET_POINTS", "compare_map", "records_map", "runtime_map"]

#: |delta mAP| targets in points, by precision.
TARGET_POINTS = {"fp32": 0.05, "fp16": 0.1, "int8": 0.5}


def _ground_truth(record: VOCRecord, size: tuple[int, int]) -> GroundTruth:
    """The record's pixel boxes as fractions of the decoded image of ``size`` (clipped as training does)."""
    boxes, labels, difficult = fit_to_image(record, size)
    width, height = size
    scale = np.asarray([width, height, width, height], dtype=np.float32)
    return GroundTruth.create((boxes / scale).astype(np.float32), labels, difficult)


def runtime_map(
    detector: Detector,
    data: str | os.PathLike | list[str | os.PathLike],
    split: str = "test",
    *,
    batch_size: int = 8,
    max_images: int = 0,
    ap_method: str = "11point",
    skip_unknown: bool = False,
) -> tuple[VOCResult, dict[str, Any]]:
    """VOC mAP of ``detector`` on ``split`` of ``data`` at the model's evaluation settings.

    Returns the :class:`VOCResult` and run facts (images, seconds, images/s).
    """
    records = read_voc_split(split_roots(data, split), split, detector.spec.class_names, skip_unknown=skip_unknown)
    if max_images:
        records = records[:max_images]
    return records_map(detector, records, batch_size=batch_size, ap_method=ap_method)


def records_map(
    detector: Detector,
    records: Sequence[VOCRecord],
    *,
    batch_size: int = 8,
    ap_method: str = "11point",
) -> tuple[VOCResult, dict[str, Any]]:
    """VOC mAP of ``detector`` on the images of ``records`` at the model's evaluation settings.

    Returns the :class:`VOCResult` and run facts (images, seconds, images/s).
    """
    settings = detector.spec.evaluation
    detections: list[Detections] = []
    truths: list[GroundTruth] = []
    start = time.perf_counter()
    for first in range(0, len(records), batch_size):
        chunk = records[first : first + batch_size]
        batch = detector.prepare([r.image_path for r in chunk])
        detections.extend(detector.raw_detections(batch.pixels, settings))
        truths.extend(_ground_truth(r, size) for r, size in zip(chunk, batch.sizes))
    seconds = time.perf_counter() - start
    result = voc_map(detections, truths, detector.spec.class_names, ap_method=ap_method)
    facts = {"images": len(records), "seconds": round(seconds, 3), "images_per_s": round(len(records) / seconds, 2)}
    return result, facts


def _precision(detector: Detector) -> str:
    backend = detector.backend
    if getattr(backend, "variant", "") == "int8":
        return "int8"
    if getattr(backend, "fp16", False) or getattr(backend, "variant", "") == "fp16":
        return "fp16"
    return "fp32"


def compare_map(
    model: str | os.PathLike,
    data: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    split: str = "test",
    backend: str = "auto",
    device: str = "cpu",
    postprocess: str = "numpy",
    batch_size: int = 8,
    max_images: int = 0,
    ap_method: str = "11point",
    backend_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Runtime mAP of ``model`` and, with ``checkpoint``, the PyTorch checkpoint's mAP beside it (a report dict).

    ``delta_points`` = (runtime - checkpoint) * 100; ``within_target`` against :data:`TARGET_POINTS`
    for the model's precision.
    """
    detector = Detector.load(model, backend, device=device, postprocess=postprocess, **(backend_options or {}))
    result, facts = runtime_map(detector, data, split, batch_size=batch_size, max_images=max_images,
                                ap_method=ap_method)
    precision = _precision(detector)
    report: dict[str, Any] = {
        "model": str(model),
        "backend": type(detector.backend).__name__,
        "device": detector.backend.device,
        "postprocess": detector.postprocess,  # the name, aliases resolved
        "precision": precision,
        "data": str(data),
        "split": split,
        "ap_method": ap_method,
        "settings": detector.spec.evaluation.to_dict(),
        "runtime": {**result.to_dict(), **facts},
        "checkpoint": None,
        "delta_points": None,
        "target_points": TARGET_POINTS[precision],
        "within_target": None,
    }
    if checkpoint is not None:
        reference = Detector.load(checkpoint, "torch", device=device, postprocess=postprocess)
        if reference.spec.class_names != detector.spec.class_names or reference.spec.priors_sha256 != detector.spec.priors_sha256:
            raise ValueError(f"{checkpoint} and {model} describe different models (classes or priors differ)")
        ref_result, ref_facts = runtime_map(reference, data, split, batch_size=batch_size, max_images=max_images,
                                            ap_method=ap_method)
        delta = (result.map - ref_result.map) * 100.0
        report.update(
            checkpoint={"path": str(checkpoint), **ref_result.to_dict(), **ref_facts},
            delta_points=delta,
            within_target=bool(abs(delta) <= TARGET_POINTS[precision]),
        )
    return report


def format_report(report: dict[str, Any]) -> str:
    """The comparison as a text table (class, runtime AP, checkpoint AP, delta in points)."""
    runtime = report["runtime"]
    reference = report["checkpoint"]
    lines = [f"model {report['model']} ({report['backend']}, {report['device']}, {report['precision']}, "
             f"postprocess {report['postprocess']}) on {report['data']} [{report['split']}], "
             f"{runtime['images']} images, {report['ap_method']} AP at {report['settings']}"]
    header = f"{'class':<16} {'runtime':>9}" + (f" {'checkpoint':>10} {'delta pt':>9}" if reference else "")
    lines += [header, "-" * len(header)]

    def fmt(value):
        return "      n/a" if value is None else f"{value:9.4f}"

    ref_classes = {c["name"]: c["ap"] for c in reference["classes"]} if reference else {}
    for entry in runtime["classes"]:
        row = f"{entry['name']:<16} {fmt(entry['ap'])}"
        if reference:
            ref = ref_classes.get(entry["name"])
            delta = None if entry["ap"] is None or ref is None else (entry["ap"] - ref) * 100
            row += f"  {fmt(ref)} {fmt(delta)}"
        lines.append(row)
    lines.append("-" * len(header))
    row = f"{'mAP':<16} {fmt(runtime['map'])}"
    if reference:
        row += f"  {fmt(reference['map'])} {fmt(report['delta_points'])}"
    lines.append(row)
    if reference:
        verdict = "within" if report["within_target"] else "OUTSIDE"
        lines.append(f"|delta| = {abs(report['delta_points']):.4f} point, {verdict} the "
                     f"{report['target_points']} point target for {report['precision']}")
    return "\n".join(lines)
