"""VOC mAP through the runtime: a model file, or a model training holds in memory, on a split of VOC data.

Every evaluation of the toolkit runs here. A :class:`~ssd_runtime.detector.Detector` (batched
preprocess -> backend -> postprocess at the spec's evaluation settings) streams the images
(:mod:`ssd_runtime.streaming`: batches in a fixed grid, the next one decoded in a thread, memory
bounded by two batches of pixels plus each image's detections); the one data reader
(:func:`ssd_runtime.datasets.read_split`, any layout, + the safe image loader) gives the ground truth, in fractions
of the decoded image size; the one metric (:func:`ssd_runtime.metric.map_of_detections`) scores
them. ``ssd-runtime eval`` loads a model file; ``ssd-train eval`` and training's periodic evaluation
(:mod:`ssd_train.evaluation`) serve their network in memory as a backend and call the same functions.

The names say what each takes: :func:`map_of_detector_on_split` (a detector and a split of VOC
data), :func:`map_of_detector_on_records` (a detector and records already read),
:func:`map_of_image_records` (each image's detections records and the images' records),
:func:`map_of_detections_files` (detections files, one or every part of a sharded run), and
:func:`map_report_of_model_file` (a model file, and with ``checkpoint`` the PyTorch checkpoint it came
from beside it: a report dict). Its ``delta_points`` carries a paired bootstrap interval over the
images (:mod:`ssd_runtime.bootstrap`): the same resamples for both models, the mAP's and each
class's; targets by precision are :data:`TARGET_POINTS` (from :mod:`ssd_runtime.variants`).

Large sets (``docs/evaluation.md``): :func:`evaluate_to_file` (a model file; ``ssd-train eval`` does
the same with its detector) writes the detections to a file as they come
(:func:`~ssd_runtime.streaming.detect_to_file`: resumable; one part per shard under ``--shard i/N`` or
torchrun), and :func:`detections_report` / :func:`map_of_detections_files` turn files back into the
metric: the same detections, the same ground truth, the same mAP to the last bit.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ssd_runtime.bootstrap import BootstrapSettings, format_interval, interval_wider_than_target, paired_bootstrap
from ssd_runtime.detections_file import (
    DetectionsFileError, DetectionsHeader, ImageRecord, image_list_sha256, read_header, read_parts,
)  # fmt: skip
from ssd_runtime.coco_metric import coco_section, format_coco, resolve_metric
from ssd_runtime.datasets import read_split
from ssd_runtime.detector import Detector
from ssd_runtime.metric import GroundTruth, VOCResult, map_of_detections
from ssd_runtime.sharding import Shard, device_for, part_paths
from ssd_runtime.streaming import ImageItem, detect_to_file, run_detections
from ssd_runtime.variants import TARGET_POINTS  # TARGET_POINTS: |delta mAP| targets by precision
from ssd_runtime.voc import VOCRecord, fit_to_image

__all__ = [
    "TARGET_POINTS", "compare_map", "detections_of_records", "detections_report", "evaluate_to_file", "image_items", "map_of_detections_files", "map_of_detector_on_records", "map_of_detector_on_split", "map_of_image_records",
    "map_report_of_model_file", "precision_of", "runtime_map",
]  # fmt: skip


def _ground_truth(record: VOCRecord, size: tuple[int, int]) -> GroundTruth:
    """The record's pixel boxes as fractions of the decoded image of ``size`` (clipped as training does)."""
    boxes, labels, difficult = fit_to_image(record, size)
    width, height = size
    scale = np.asarray([width, height, width, height], dtype=np.float32)
    return GroundTruth.create((boxes / scale).astype(np.float32), labels, difficult)


def image_items(records: Sequence[VOCRecord]) -> list[ImageItem]:
    """The streaming loop's image list of ``records``: each one's index in them, image id and image file."""
    return [ImageItem(i, r.image_id, r.image_path) for i, r in enumerate(records)]


def map_of_detector_on_split(
    detector: Detector,
    data: str | os.PathLike | list[str | os.PathLike],
    split: str = "test",
    *,
    batch_size: int = 8,
    max_images: int = 0,
    ap_method: str = "11point",
    skip_unknown: bool = False,
    data_format: str = "auto",
) -> tuple[VOCResult, dict[str, Any]]:
    """VOC mAP of ``detector`` on ``split`` of ``data`` (layout ``data_format``, "auto": detected) at the model's
    evaluation settings.

    Returns the :class:`VOCResult` and run facts (images, seconds, images/s).
    """
    records = read_split(data, split, detector.spec.class_names, format=data_format, skip_unknown=skip_unknown,
                         max_images=max_images)
    return map_of_detector_on_records(detector, records, batch_size=batch_size, ap_method=ap_method)


def map_of_detector_on_records(
    detector: Detector,
    records: Sequence[VOCRecord],
    *,
    batch_size: int = 8,
    ap_method: str = "11point",
) -> tuple[VOCResult, dict[str, Any]]:
    """VOC mAP of ``detector`` on the images of ``records`` at the model's evaluation settings.

    Returns the :class:`VOCResult` and run facts (images, seconds, images/s).
    """
    images, facts = detections_of_records(detector, records, batch_size)
    return map_of_image_records(records, images, detector.spec.class_names, ap_method=ap_method), facts


def detections_of_records(detector: Detector, records: Sequence[VOCRecord], batch_size: int) -> tuple[list[ImageRecord], dict[str, Any]]:
    """The detections of every image of ``records`` at the model's evaluation settings, and run facts."""
    images: list[ImageRecord] = []
    facts = run_detections(detector, image_items(records), detector.spec.evaluation, images.extend,
                           batch_size=batch_size)
    return images, {k: facts[k] for k in ("images", "seconds", "images_per_s")}


def map_of_image_records(
    records: Sequence[VOCRecord],
    images: Sequence[ImageRecord],
    class_names: Sequence[str],
    *,
    ap_method: str = "11point",
) -> VOCResult:
    """VOC mAP of per-image detections records (``images[i]`` belongs to ``records[i]``) against the records'
    ground truth.

    Ground truth is taken in fractions of each image's decoded size (``width`` x ``height`` of its
    detections record), as training's data does.
    """
    if len(records) != len(images):
        raise ValueError(f"{len(images)} detection records for {len(records)} images: pass one per image, in order")
    for record, image in zip(records, images):
        if record.image_id != image.image_id:
            raise DetectionsFileError(f"image {image.index}: detections of {image.image_id!r} for the ground truth of "
                                      f"{record.image_id!r}; the detections come from another image list")
    truths = [_ground_truth(r, (image.width, image.height)) for r, image in zip(records, images)]
    return map_of_detections([image.detections for image in images], truths, class_names, ap_method=ap_method)


def precision_of(detector: Detector) -> str:
    """The precision of the detector's network: "fp32", "fp16" or "int8" (a key of :data:`TARGET_POINTS`),
    as its backend declares it (a TensorRT engine's from its sidecar, an ONNX model's its variant's, a
    checkpoint's its ``fp16`` flag). A plan loaded without its sidecar declares none: reported as fp32,
    the precision every build starts from."""
    return detector.backend.precision or "fp32"


def _model_facts(detector: Detector, model: str | os.PathLike) -> dict[str, Any]:
    """The report's description of the model run: path, backend, device, postprocess, precision and the
    backend's run options (OpenVINO's inference precision hint among them)."""
    return {"model": str(model), "backend": type(detector.backend).__name__, "device": detector.backend.device,
            "postprocess": detector.postprocess, "precision": precision_of(detector),  # postprocess: aliases resolved
            "backend_options": detector.backend.options}


def _report(facts: dict[str, Any], data: Any, split: str, ap_method: str, settings: dict[str, Any],
            result: VOCResult, run: dict[str, Any]) -> dict[str, Any]:
    """The evaluation report (:func:`format_report` renders it): model facts, data, settings, the result."""
    return {**facts, "data": str(data), "split": split, "ap_method": ap_method, "settings": settings,
            "runtime": {**result.to_dict(), **run}, "checkpoint": None, "delta_points": None,
            "delta_points_interval": None, "bootstrap": None, "class_deltas": None,
            "target_points": TARGET_POINTS[facts["precision"]], "within_target": None,
            "interval_wider_than_target": None}


def map_report_of_model_file(
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
    bootstrap: BootstrapSettings = BootstrapSettings(),
    metric: str = "auto",
    coco_results: str | os.PathLike | None = None,
    data_format: str = "auto",
) -> dict[str, Any]:
    """Runtime mAP of ``model`` and, with ``checkpoint``, the PyTorch checkpoint's mAP beside it (a report dict).

    ``metric`` "coco" (or "auto" on COCO data: :func:`ssd_runtime.coco_metric.resolve_metric`) adds the
    runtime's COCO metrics under ``"coco"``; ``coco_results`` writes its detections in COCO's results format.
    ``data_format``: the layout of ``data`` (:func:`ssd_runtime.datasets.read_split`; "auto": detected).

    ``delta_points`` = (runtime - checkpoint) * 100; ``within_target`` against :data:`TARGET_POINTS`
    for the model's precision. ``delta_points_interval``: [lo, hi] points, the paired bootstrap interval
    of the delta (``bootstrap``: resamples, level, seed, recorded under ``"bootstrap"``);
    ``interval_wider_than_target``: the interval is wider than the band [-target, +target];
    ``class_deltas``: each class's delta and interval.
    """
    metric = resolve_metric(metric, data, data_format)
    detector = Detector.load(model, backend, device=device, postprocess=postprocess, **(backend_options or {}))
    names = detector.spec.class_names
    records = read_split(data, split, names, format=data_format, max_images=max_images)
    images, run = detections_of_records(detector, records, batch_size)
    result = map_of_image_records(records, images, names, ap_method=ap_method)
    facts = _model_facts(detector, model)
    precision = facts["precision"]
    report = _report(facts, data, split, ap_method, detector.spec.evaluation.to_dict(), result, run)
    report.update(metric=metric, coco=coco_section(metric, data, split, records, images, names, coco_results,
                                                   data_format))
    if checkpoint is not None:
        reference = Detector.load(checkpoint, "torch", device=device, postprocess=postprocess)
        if reference.spec.class_names != detector.spec.class_names or reference.spec.priors_sha256 != detector.spec.priors_sha256:
            raise ValueError(f"{checkpoint} and {model} describe different models (classes or priors differ)")
        ref_result, ref_facts = map_of_detector_on_split(reference, data, split, batch_size=batch_size,
                                                         max_images=max_images, ap_method=ap_method,
                                                         data_format=data_format)
        delta = (result.map - ref_result.map) * 100.0
        intervals = paired_bootstrap(result.matches, ref_result.matches, bootstrap)
        report.update(
            checkpoint={"path": str(checkpoint), **ref_result.to_dict(), **ref_facts},
            delta_points=delta,
            within_target=bool(abs(delta) <= TARGET_POINTS[precision]),
            **_interval_fields(intervals.map, TARGET_POINTS[precision]),
            bootstrap=bootstrap.to_dict(),
            class_deltas=[
                {"name": c.name, "delta_points": None if np.isnan(c.ap) or np.isnan(r.ap) else (c.ap - r.ap) * 100.0,
                 "delta_points_interval": _as_list(intervals.classes[c.name])}
                for c, r in zip(result.classes, ref_result.classes)],
        )
    return report


def _as_list(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [interval[0], interval[1]]


def _interval_fields(interval: tuple[float, float] | None, target: float) -> dict[str, Any]:
    """The report's ``delta_points_interval`` and ``interval_wider_than_target`` of a mAP delta judged at ``target``."""
    return {"delta_points_interval": _as_list(interval),
            "interval_wider_than_target": interval_wider_than_target(interval, target)}


def evaluate_to_file(
    model: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "test",
    backend: str = "auto",
    device: str = "cpu",
    postprocess: str = "numpy",
    batch_size: int = 8,
    max_images: int = 0,
    ap_method: str = "11point",
    backend_options: dict[str, Any] | None = None,
    shard: Shard = Shard(),
    resume: bool = False,
    skip_unknown: bool = False,
    progress: Callable[[int], Any] | None = None,
    metric: str = "auto",
    coco_results: str | os.PathLike | None = None,
    data_format: str = "auto",
) -> dict[str, Any]:
    """Detections of ``shard``'s share of ``split`` into its part of ``out``, then the mAP of every part.

    The metric is computed by the single process, or under torchrun by rank 0 once every rank has
    written its part (:func:`~ssd_runtime.streaming.detect_to_file` waits); it is
    :func:`detections_report` of the parts, with ``"run"``: this process's facts. A shard given by
    ``--shard i/N`` (nobody to wait for) returns ``{"shard", "merged": False, "run", "parts"}``: merge
    the parts with :func:`detections_report` once all are written. ``resume`` skips images already in
    the part.
    """
    detector = Detector.load(model, backend, device=device_for(device, shard), postprocess=postprocess,
                             **(backend_options or {}))
    records = read_split(data, split, detector.spec.class_names, format=data_format, skip_unknown=skip_unknown,
                         max_images=max_images)
    facts = _model_facts(detector, model)
    run = detect_to_file(detector, model, image_items(records), out, detector.spec.evaluation,
                         precision=facts["precision"], batch_size=batch_size, shard=shard, resume=resume,
                         source={**facts, "data": str(data), "split": split}, progress=progress)
    parts = [str(p) for p in part_paths(out, shard.count)]
    if not shard.merges:
        return {"shard": str(shard), "merged": False, "run": run, "parts": parts}
    return {**detections_report(parts, data, split=split, ap_method=ap_method, records=records, metric=metric,
                                coco_results=coco_results, data_format=data_format), "run": run}


def map_of_detections_files(
    paths: Sequence[str | os.PathLike],
    records: Sequence[VOCRecord],
    *,
    ap_method: str = "11point",
    where: str = "the data",
) -> tuple[DetectionsHeader, VOCResult]:
    """VOC mAP of detections files (one, or every part of a sharded run) against ``records``' ground truth.

    ``records`` must be the image list the files were made from (same ids, same order); ``where``
    names it in the error otherwise. Returns the files' header and the result.
    """
    header, images = read_parts(paths)
    if len(records) != header.num_images or image_list_sha256(r.image_id for r in records) != header.image_list_sha256:
        source = header.source or {}
        raise DetectionsFileError(
            f"{paths[0]} holds detections of {header.num_images} images of another list than {where} "
            f"({len(records)} images); evaluate it on the data and split it was made from "
            f"(its header: data {source.get('data')!r}, split {source.get('split')!r})"
        )
    return header, map_of_image_records(records, images, header.class_names, ap_method=ap_method)


def detections_report(
    paths: Sequence[str | os.PathLike],
    data: str | os.PathLike,
    *,
    split: str = "test",
    ap_method: str = "11point",
    skip_unknown: bool = False,
    records: Sequence[VOCRecord] | None = None,
    metric: str = "auto",
    coco_results: str | os.PathLike | None = None,
    data_format: str = "auto",
) -> dict[str, Any]:
    """The evaluation report (as :func:`map_report_of_model_file`'s) of detections files on ``split`` of ``data``.

    A ``--max-images`` run's files cover the first images of the split. ``records``: the split already read.
    ``metric``, ``coco_results`` and ``data_format`` as :func:`map_report_of_model_file`'s.
    """
    metric = resolve_metric(metric, data, data_format)
    if records is None:
        header = read_header(paths[0])  # the class names to read the split with, and how many images
        # the files hold the split's first num_images images (all of them, or a --max-images run's)
        records = read_split(data, split, header.class_names, format=data_format, skip_unknown=skip_unknown)[: header.num_images]
    header, result = map_of_detections_files(paths, records, ap_method=ap_method, where=f"split {split!r} of {data}")
    coco = None
    if metric == "coco" or coco_results is not None:  # the detections again, for COCO's documents
        coco = coco_section(metric, data, split, records, read_parts(paths)[1], header.class_names, coco_results,
                            data_format)
    source = header.source or {}
    facts = {key: source.get(key) for key in ("model", "backend", "device", "postprocess", "backend_options")}
    report = _report({**facts, "precision": header.precision}, data, split, ap_method, header.settings, result,
                     {"images": len(records)})
    return {**report, "metric": metric, "coco": coco, "detections": [str(p) for p in paths]}


#: The names README and docs used before the names said what they take (kept: public API).
compare_map = map_report_of_model_file
runtime_map = map_of_detector_on_split


def _hint(backend_options: dict[str, Any] | None) -> str:
    """", inference precision f32" where the backend states one (OpenVINO), else nothing."""
    hint = (backend_options or {}).get("inference_precision")
    return f", inference precision {hint}" if hint else ""


def format_report(report: dict[str, Any]) -> str:
    """The comparison as a text table (class, runtime AP, checkpoint AP, delta in points and its interval)."""
    runtime = report["runtime"]
    reference = report["checkpoint"]
    bootstrap = report.get("bootstrap")
    level = f"{bootstrap['interval_level']:.0%} interval" if bootstrap else "interval"
    lines = [f"model {report['model']} ({report['backend']}, {report['device']}, {report['precision']}, "
             f"postprocess {report['postprocess']}{_hint(report.get('backend_options'))}) on {report['data']} [{report['split']}], "
             f"{runtime['images']} images, {report['ap_method']} AP at {report['settings']}"]
    header = f"{'class':<16} {'runtime':>9}" + (f" {'checkpoint':>10} {'delta pt':>9}  {level:<18}" if reference else "")
    header = header.rstrip()
    lines += [header, "-" * len(header)]

    def fmt(value):
        return "      n/a" if value is None else f"{value:9.4f}"

    ref_classes = {c["name"]: c["ap"] for c in reference["classes"]} if reference else {}
    class_intervals = {c["name"]: c["delta_points_interval"] for c in report.get("class_deltas") or []}
    for entry in runtime["classes"]:
        row = f"{entry['name']:<16} {fmt(entry['ap'])}"
        if reference:
            ref = ref_classes.get(entry["name"])
            delta = None if entry["ap"] is None or ref is None else (entry["ap"] - ref) * 100
            row += f"  {fmt(ref)} {fmt(delta)}  {format_interval(class_intervals.get(entry['name']))}"
        lines.append(row)
    lines.append("-" * len(header))
    row = f"{'mAP':<16} {fmt(runtime['map'])}"
    if reference:
        row += f"  {fmt(reference['map'])} {fmt(report['delta_points'])}  {format_interval(report.get('delta_points_interval'))}"
    lines.append(row)
    if reference:
        verdict = "within" if report["within_target"] else "OUTSIDE"
        lines.append(f"|delta| = {abs(report['delta_points']):.4f} point, {verdict} the "
                     f"{report['target_points']} point target for {report['precision']}")
        if bootstrap and report.get("delta_points_interval") is not None:
            lines.append(f"{level} of the delta {format_interval(report['delta_points_interval'])} points "
                         f"({bootstrap['resamples']} paired resamples of the {runtime['images']} images, "
                         f"seed {bootstrap['seed']})"
                         + ("; interval wider than the target: these images cannot tell whether the "
                            f"{report['target_points']} point target is met" if report["interval_wider_than_target"]
                            else ""))
    if report.get("coco"):
        lines += format_coco(report["coco"])
    return "\n".join(lines)
