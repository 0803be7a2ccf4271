"""The steps of ``ssd-export deploy``, one function each; every one is a call of the toolkit's own API.

- verify (a second runtime's row, e.g. OpenVINO on an ONNX file): :func:`ssd_export.parity.check_parity` on
  that runtime's backend;
- build: :func:`ssd_export.onnx.export.export_onnx` (fp32, fp16, uint8-nhwc, end2end; each verified
  against the checkpoint before its file appears), :func:`ssd_export.int8.quantize.quantize_int8` or, with a
  target, :func:`ssd_export.int8.search.search_int8` (int8), ``ssd_export.tensorrt.engine.build_engine``
  (TensorRT engines; the module is imported only when engines are asked for);
- evaluate: the detections of :func:`ssd_runtime.evaluate.detections_of_records` through a
  :class:`~ssd_runtime.detector.Detector` at the model's evaluation settings, scored by the one metric
  (:func:`ssd_runtime.metric.map_of_detections`) and, when asked, COCO's (:mod:`ssd_runtime.coco_metric`);
- bench: :func:`ssd_runtime.bench.benchmark`;
- draw: :func:`ssd_runtime.draw.draw_detections`;
- video (once per deploy, after the artifacts): the first test images encoded as a short clip
  (:func:`write_video`) and run through :meth:`ssd_runtime.detector.Detector.stream` into an annotated
  video (:class:`ssd_runtime.video.VideoFileSink`).

Nothing here decides what to reuse or how to report: :mod:`ssd_export.deploy.run` does.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssd_export.defaults import DEFAULT_VERIFY_BATCH, VERIFY_SEED
from ssd_runtime.bench import benchmark
from ssd_runtime.bootstrap import save_matches
from ssd_runtime.detections_file import image_list_sha256
from ssd_runtime.detector import Detector
from ssd_runtime.draw import draw_detections
from ssd_runtime.coco_metric import coco_section
from ssd_runtime.evaluate import detections_of_records, map_of_image_records
from ssd_runtime.fileio import atomic_path, sha256_file
from ssd_runtime.metric import VOCResult
from ssd_runtime.spec import ModelSpec, PostprocessSettings
from ssd_runtime.variants import PRECISIONS, VARIANT_PRECISION
from ssd_runtime.datasets import read_split
from ssd_runtime.voc import VOCRecord

__all__ = [
    "Artifact",
    "DeployError",
    "bench_artifact",
    "build_calibration",
    "build_engine",
    "build_int8",
    "build_onnx",
    "draw_artifact",
    "evaluate_artifact",
    "load_detector",
    "records_fingerprint",
    "report_settings",
    "stream_video",
    "test_records",
    "thin_curve",
    "verify_on_runtime",
    "write_video",
]

#: Points kept per precision-recall curve in the saved evaluation (plots need no more; the full curve of
#: 500 test images at min_score 0.01 has up to ~10^4 points per class).
CURVE_POINTS = 400


#: The deploy's annotated video: its frames (the first test images), their rate, and their size (VOC's usual
#: 500x375 with an even height, which H.264's 4:2:0 needs; the model resizes every frame to its input anyway).
#: 48 frames at 12 fps: a 4 s clip; the whole step (encode, stream, write) took 1.9-3.0 s with the main job's INT8
#: model on 2 shared AMD EPYC cores (24-35 frames/s; 3.0 s at load average 5, in a rerun of the main job's deploy).
VIDEO_FRAMES = 48
VIDEO_FPS = 12.0
VIDEO_SIZE = (500, 376)

#: Images per batch of the evaluation (``map_of_detector_on_records``'s default; an engine's profile must reach it).
EVALUATION_BATCH = 8


class DeployError(ValueError):
    """``ssd-export deploy`` cannot start (bad arguments, missing inputs, TensorRT required but absent)."""


@dataclass(frozen=True)
class Artifact:
    """One thing the deploy builds (or the checkpoint it starts from).

    name: its name in the report (``pytorch``, ``fp32``, ``trt-int8``, ``openvino-int8``, ...); kind:
    ``checkpoint``, ``onnx`` or ``engine``; variant: the ONNX variant (an engine's: its source's);
    precision: the key of :data:`ssd_runtime.variants.TARGET_POINTS`; path: the file; source: the artifact
    it is built from (int8 from fp32, ``trt-X`` from X; for a second runtime's row, the row that builds
    the file it reads), None for those built from the checkpoint; runtime: the backend that reads a file
    another row builds (``openvino`` on an ONNX file), None for the file kind's own (the checkpoint in
    PyTorch, ONNX in ONNX Runtime, an engine in TensorRT).
    """

    name: str
    kind: str
    variant: str
    precision: str
    path: Path
    source: str | None = None
    runtime: str | None = None

    @property
    def device(self) -> str:
        return "cuda" if self.kind == "engine" else "cpu"

    @property
    def backend(self) -> str:
        """The backend name it runs in (the report's runtime column)."""
        return self.runtime or FILE_KIND_RUNTIMES[self.kind]

    @property
    def builds(self) -> bool:
        """Whether this row writes its file (the checkpoint is given; a second runtime reads another row's file)."""
        return self.kind != "checkpoint" and self.runtime is None


#: The backend of each artifact kind's own row.
FILE_KIND_RUNTIMES = {"checkpoint": "torch", "onnx": "onnxruntime", "engine": "tensorrt"}


def report_settings(spec: ModelSpec) -> PostprocessSettings:
    """Settings of the latency and drawing steps: the evaluation NMS with the detection threshold.

    The end2end artifact carries the evaluation settings in its graph (for its mAP) and can only raise
    the threshold after the fact, so every artifact is timed and drawn at these same settings.
    """
    return PostprocessSettings(spec.detection.min_score, spec.evaluation.max_overlap, spec.evaluation.top_k)


# ------------------------------------------------------------------------------------------- data


def test_records(data: str | os.PathLike, class_names: tuple[str, ...], split: str = "test",
                 max_images: int = 0) -> list[VOCRecord]:
    """The annotated images of ``split`` of ``data`` in any layout (:func:`ssd_runtime.datasets.read_split`; the first
    ``max_images`` when > 0)."""
    records = read_split(data, split, class_names, max_images=max_images)
    if not records:
        raise DeployError(f"split {split!r} of {data} lists no image: nothing to evaluate on")
    return records


def records_fingerprint(records: list[VOCRecord]) -> str:
    """sha256 of what the evaluation reads: each image's bytes and its annotation (boxes, labels, difficult)."""
    digest = hashlib.sha256()
    for r in records:
        digest.update(json.dumps([r.image_id, sha256_file(r.image_path), r.boxes.tolist(), r.labels.tolist(),
                                  r.difficult.tolist()]).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ build


def build_onnx(checkpoint: Path, artifact: Artifact, spec: ModelSpec) -> dict[str, Any]:
    """Export and verify one ONNX variant (``export_onnx``); end2end with the evaluation settings baked in.

    The end2end cap stays the export's default (3,840 candidates per image): on the ``cpu-quick``
    model an image has a median of 2,743 (class, prior) candidates above min_score 0.01 and up to
    5,427, and that cap gave detections identical to the NumPy postprocess on 120 test images; the
    export's own check refuses a cap that changes them.
    """
    from ssd_export.onnx.export import export_onnx

    result = export_onnx(checkpoint, artifact.path, variant=artifact.variant, end2end_settings="evaluation").to_dict()
    verification = result.pop("verification") or {}
    return {
        "seconds": result["seconds"],
        "export": result,
        "verification": {"passed": verification.get("passed"), "failures": verification.get("failures", []),
                         "report": result["report_path"], "checks": _verification_summary(verification)},
    }


def _verification_summary(report: dict[str, Any]) -> dict[str, Any]:
    """Per output: max abs difference and allclose; per detection comparison: identical and mismatches."""
    outputs = {name: {"max_abs": s["max_abs"], "allclose": s["allclose"]} for name, s in (report.get("outputs") or {}).items()}
    detections = {name: {"identical": c.get("identical"), "mismatches": c.get("num_mismatches")}
                  for name, c in (report.get("detections") or {}).items()}
    return {"outputs": outputs, "detections": detections, "batch_size": report.get("batch_size")}


def build_calibration(data: str | os.PathLike, spec: ModelSpec, output: Path, images: int, seed: int = 0) -> dict[str, Any]:
    """A calibration manifest of ``data``'s trainval split for ``spec`` (``build_manifest``), written to ``output``.

    The file is rewritten only when its content changes, so a rerun on the same data keeps its sha256
    (and the INT8 model built from it stays reusable; the spec, unlike a model path, does not change
    when the deploy folder moves). Returns the manifest's summary and its warnings.
    """
    from ssd_export.int8.calibration import build_manifest, write_manifest

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = build_manifest(data, split="trainval", images=images, seed=seed, spec=spec)
    text = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if not output.is_file() or output.read_text(encoding="utf-8") != text:
        write_manifest(manifest, output)
    return {"manifest": str(output), "sha256": sha256_file(output), "images": manifest["selection"]["selected"],
            "split": "trainval", "seed": seed, "built": True, "warnings": [str(w.message) for w in caught]}


def build_int8(fp32_model: Path, calibration: Path, calibration_root: Path | None, artifact: Artifact, *,
               data: str | os.PathLike, max_drop: float | None, method: str | None, parity: bool = True) -> dict[str, Any]:
    """Quantize the fp32 export to Q/DQ INT8 (``quantize_int8``; with ``max_drop``: ``search_int8`` on held-out images).

    ``parity``: the informative comparison with the fp32 source (INT8 is judged by mAP; its detection
    comparison took 13 s of a 16 s quantization of the barely trained test model, whose many near-tied
    scores the comparison examines one by one).
    """
    from ssd_export.int8.calibration import CalibrationSet

    calib = CalibrationSet.load(calibration, data_root=calibration_root)
    options = {"method": method, "parity": parity} if method else {"parity": parity}
    if max_drop is None:
        from ssd_export.int8.quantize import quantize_int8

        report = quantize_int8(fp32_model, calib, artifact.path, **options)
        search = None
    else:
        from ssd_export.int8.search import search_int8

        result = search_int8(fp32_model, calib, artifact.path, data=data, max_drop=max_drop, **options)
        report = result["int8_report"]
        search = {key: result[key] for key in ("met", "max_drop_points", "fp32_map", "chosen", "kept_float",
                                               "report_path", "seconds")}
    parity = report.get("parity") or {}
    return {
        "seconds": report["seconds"],
        "quantize": {"method": report["settings"]["method"], "calibration": report["calibration"],
                     "report": report["report_path"], "search": search},
        # passed: TensorRT's Q/DQ rules and the ONNX checker (quantize_int8 writes nothing otherwise); INT8
        # accuracy is judged by mAP, the parity with its fp32 source is informative
        "verification": {"passed": not report["rules"]["violations"], "failures": report["rules"]["violations"],
                         "report": report["report_path"],
                         "checks": {"rules_violations": report["rules"]["violations"],
                                    **_verification_summary(parity)}},
    }


def build_engine(engine_module: Any, source: Path, checkpoint: Path, artifact: Artifact, max_batch: int) -> dict[str, Any]:
    """A TensorRT engine of an ONNX artifact (``ssd_export.tensorrt.engine.build_engine``), checked against the checkpoint.

    Its profile spans batch 1 to ``max_batch`` (the evaluation's and the benchmark's largest batch).
    """
    build = engine_module.build_engine(source, artifact.path, checkpoint=checkpoint, batch=(1, max_batch, max_batch))
    parity = build.parity or {}
    sidecar = build.sidecar.to_dict()
    return {
        "seconds": round(build.seconds, 3),
        "engine": {**{key: sidecar.get(key) for key in ("tensorrt_version", "gpu_name", "compute_capability",
                                                        "precision", "profile")},
                   "sidecar": str(build.sidecar_path), "warnings": list(build.warnings)},
        "verification": {"passed": parity.get("passed"), "failures": parity.get("failures", []),
                         "report": str(build.sidecar_path), "checks": _verification_summary(parity)},
    }


def verify_on_runtime(detector: Detector, checkpoint: Path, artifact: Artifact, report_path: Path, *,
                      int8_parity: bool = True) -> dict[str, Any]:
    """The parity of an ONNX file with its checkpoint as a second runtime reads it (``artifact.runtime``).

    The one check (:func:`ssd_export.parity.check_parity` on the detector's backend; the end2end model's
    detections: :func:`~ssd_export.parity.check_end2end`) at the variant's tolerance, on the scenes its
    build was verified on; INT8's is reported, not judged (its accuracy is judged by mAP), and skipped
    with ``int8_parity`` False as at its build. The file's own checks (TensorRT rules, source checkpoint,
    spec) are its build's. Writes the full report, with the backend's options, to ``report_path``.
    """
    from ssd_export.parity import check_end2end, check_parity, reference_outputs, write_report
    from ssd_runtime.onnx_model import read_onnx_info

    start = time.perf_counter()
    backend = detector.backend
    failures: list[str] = []
    if artifact.variant == "int8" and not int8_parity:
        return {"seconds": 0.0, "verification": {"passed": None, "failures": [], "report": None, "checks": {},
                                                 "skipped": "INT8 parity off (--no-int8-parity)"}}
    if artifact.variant == "end2end":
        report: dict[str, Any] = {"backend": type(backend).__name__, "batch_size": DEFAULT_VERIFY_BATCH}
        reference = reference_outputs(checkpoint, DEFAULT_VERIFY_BATCH, VERIFY_SEED)
        check_end2end(read_onnx_info(artifact.path), backend, reference, report, failures)
    else:
        tolerance = PRECISIONS["int8"].tolerance if artifact.variant == "int8" else VARIANT_PRECISION[artifact.variant]
        report = check_parity(backend, checkpoint, tolerance, batch_size=DEFAULT_VERIFY_BATCH, seed=VERIFY_SEED)
        if artifact.variant == "int8":  # informative, as at its build
            report.update(judged=False, outside_tolerance=report.pop("failures"))
        else:
            failures = report.pop("failures")
    report.update(passed=not failures, failures=failures, runtime=artifact.runtime, options=backend.options)
    write_report(report, report_path)
    return {"seconds": round(time.perf_counter() - start, 3),
            "verification": {"passed": not failures, "failures": failures, "report": str(report_path),
                             "checks": _verification_summary(report)}}


# ------------------------------------------------------------------------------- run the artifact


def load_detector(artifact: Artifact) -> Detector:
    """The runtime's Detector on the artifact (the checkpoint through the PyTorch backend, in FP32 on the CPU;
    a second runtime's row through that backend at its default options: OpenVINO's float parts at f32)."""
    backend = "torch" if artifact.kind == "checkpoint" else artifact.runtime or "auto"
    return Detector.load(artifact.path, backend, device=artifact.device)


def thin_curve(precision: np.ndarray, recall: np.ndarray, points: int = CURVE_POINTS) -> tuple[list, list]:
    """At most ``points`` evenly spaced points of a curve (the last one kept), rounded for JSON."""
    if len(recall) > points:
        index = np.unique(np.linspace(0, len(recall) - 1, points).round().astype(int))
        precision, recall = precision[index], recall[index]
    return [round(float(v), 5) for v in precision], [round(float(v), 5) for v in recall]


def evaluate_artifact(detector: Detector, records: list[VOCRecord], curves_path: Path, matches_path: Path,
                      batch_size: int = EVALUATION_BATCH, coco_data: str | os.PathLike | None = None) -> dict[str, Any]:
    """VOC mAP at the evaluation settings (the detections of ``detections_of_records``, scored by
    ``map_of_image_records``, as ``map_of_detector_on_records`` does); per-class AP, curves saved to
    ``curves_path``, the matched detections to ``matches_path`` (``ssd_runtime.bootstrap.save_matches``:
    the report's paired intervals pair them with the reference's). With ``coco_data`` (the dataset of
    ``records``' test split), COCO's metrics of the same detections under ``"coco"``
    (:func:`ssd_runtime.coco_metric.coco_section`), else None."""
    images, facts = detections_of_records(detector, records, batch_size)
    result = map_of_image_records(records, images, detector.spec.class_names)
    coco = None if coco_data is None else coco_section("coco", coco_data, "test", records, images,
                                                       detector.spec.class_names)
    curves = {c.name: dict(zip(("precision", "recall"), thin_curve(c.precision, c.recall))) for c in result.classes}
    with atomic_path(curves_path) as tmp:
        tmp.write_text(json.dumps({"map": result.map, "ap": _ap(result), "curves": curves}) + "\n")
    save_matches(matches_path, result.matches, image_list_sha256(r.image_id for r in records))
    return {**result.to_dict(), **facts, "settings": detector.spec.evaluation.to_dict(), "curves": str(curves_path),
            "matches": str(matches_path), "backend_options": detector.backend.options, "coco": coco}


def _ap(result: VOCResult) -> dict[str, float | None]:
    return {c.name: None if np.isnan(c.ap) else float(c.ap) for c in result.classes}


def bench_artifact(detector: Detector, batch_sizes: list[int], images: list[Path], *, warmup: int,
                   iterations: int) -> dict[str, Any]:
    """Latency per stage at each batch size (``ssd_runtime.bench.benchmark``) at :func:`report_settings`,
    on the given test images: random scenes would time a trained model's postprocess on thousands of
    spurious candidates (see ``ssd_runtime.bench``)."""
    report = benchmark(detector, batch_sizes, warmup=warmup, iterations=iterations,
                       settings=report_settings(detector.spec), images=images)
    report["images"] = f"the first {len(images)} test images"
    return report


def draw_artifact(detector: Detector, image_paths: list[Path], folder: Path) -> dict[str, Any]:
    """Draw the detections of each image at :func:`report_settings` into ``folder`` (one PNG per image)."""
    from PIL import Image

    settings = report_settings(detector.spec)
    batch = detector.prepare(image_paths)
    found = detector.fractional_detections(batch.pixels, settings)
    written, counts = [], []
    for path, dets, (width, height) in zip(image_paths, found, batch.sizes):
        image_dets = detector.to_image_detections(dets, width, height)
        out = folder / f"{Path(path).stem}.png"
        with Image.open(path) as image, atomic_path(out) as tmp:
            draw_detections(image, image_dets).save(tmp, format="PNG")
        written.append(str(out))
        counts.append(len(image_dets))
    return {"images": written, "detections": counts, "settings": settings.to_dict()}


# ------------------------------------------------------------------------------------------ video


def write_video(images: Iterable[str | os.PathLike | np.ndarray], path: Path, fps: float,
                size: tuple[int, int] = VIDEO_SIZE, quality: int = 18) -> int:
    """Encode images (paths or uint8 (H, W, 3) RGB arrays) as an H.264 .mp4 (yuv420p, constant quality
    ``quality``: x264's crf, 18 is near-transparent) at ``fps``, each resized (bilinear) to ``size``
    (width, height; even), through :class:`ssd_runtime.video.sinks.VideoWriter` (atomic). Returns the
    frames written. Needs PyAV."""
    from PIL import Image

    from ssd_runtime.video.sinks import VideoWriter

    if size[0] % 2 or size[1] % 2:
        raise ValueError(f"H.264 in yuv420p needs an even width and height, got {size}")
    writer = VideoWriter(path, fps, codec="libx264", quality=quality)
    try:
        for image in images:
            picture = Image.fromarray(image) if isinstance(image, np.ndarray) else Image.open(image)
            writer.write(picture.convert("RGB").resize(size, Image.BILINEAR))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.frames


def stream_video(detector: Detector, image_paths: list[Path], output: Path, fps: float = VIDEO_FPS) -> dict[str, Any]:
    """The deploy's annotated video: ``image_paths`` encoded as a :data:`VIDEO_SIZE` H.264 clip at ``fps`` (a
    temporary file), streamed through ``detector`` (:meth:`Detector.stream`: a file, every frame in order, batch
    1) at :func:`report_settings` into ``output`` (:class:`~ssd_runtime.video.VideoFileSink`: boxes, labels,
    scores and the running frame rate drawn). Returns the video, its frames, the stream's throughput, latency
    and per-stage times (ms), the detections drawn and the step's seconds."""
    from ssd_runtime.video import CallbackSink, VideoFileSink

    start = time.perf_counter()
    settings = report_settings(detector.spec)
    detections = []
    with tempfile.TemporaryDirectory(prefix="ssd-deploy-video-") as tmp:
        clip = Path(tmp) / "test_scenes.mp4"
        write_video(image_paths, clip, fps)
        encode_s = time.perf_counter() - start
        stream = detector.stream(str(clip), sinks=[VideoFileSink(output, fps), CallbackSink(
            lambda result: detections.append(len(result.detections)))], min_score=settings.min_score,
            max_overlap=settings.max_overlap, top_k=settings.top_k)
        report = stream.run()
    if report["processed"] != len(image_paths):
        raise RuntimeError(f"the video stream processed {report['processed']} of {len(image_paths)} frames "
                           f"(ended by {report['ended_by']}{': ' + report['error'] if report.get('error') else ''})")
    return {"video": str(output), "frames": report["processed"], "fps": fps, "size": list(VIDEO_SIZE),
            "source": f"the first {len(image_paths)} test images as a {VIDEO_SIZE[0]}x{VIDEO_SIZE[1]} H.264 clip "
                      f"at {fps:g} fps",
            "backend": report["backend"], "device": str(detector.backend.device), "batch_size": report["batch_size"],
            "policy": report["policy"], "throughput_fps": report["throughput_fps"], "stream_seconds": report["seconds"],
            "latency": report["latency"], "stages": report["stages"], "detections": detections,
            "settings": settings.to_dict(), "encode_seconds": round(encode_s, 3),
            "seconds": round(time.perf_counter() - start, 3)}
