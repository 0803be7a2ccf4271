"""Parity of an exported ONNX file with its PyTorch checkpoint, through ONNX Runtime (CPU).

The images are rendered by the synthetic dataset generator with a seed the tracing never used
(natural-looking activations, not noise), resized as the evaluation pipeline does, at a batch size
other than the traced one when the batch is dynamic. Checks by variant:

- ``fp32`` / ``uint8-nhwc``: every output within rtol 1e-3 / atol 1e-5 of PyTorch FP32 (or 32 FP32 ulps of
  the output's range, 32 * 2**-23 * max|expected|, if larger: a trained network with large outputs
  differs from PyTorch by ~10 such ulps through summation order alone), and identical
  detections (shared/reference/ssd300.md) after the NumPy postprocess at the spec's detection and
  evaluation settings;
- ``fp16``: finite outputs within the FP16 tolerance of PyTorch FP32 (rtol 2e-2; atol 2e-2 or 8 FP16
  ulps of the output's range, 8 * 2**-11 * max|expected|, whichever is larger: FP16 rounding error
  grows with the magnitude of the activations, and networks with BatchNorm folded in reach 3e-3 of
  their range); the detection comparison is reported, not required;
- ``end2end``: the graph's padded detections vs the NumPy reference postprocess of the PyTorch outputs
  at the baked-in settings: identical detections required.

Every variant: output shapes (P = spec.num_priors, i.e. 38/19/10/5/3/1 maps), the ONNX spec equal to
the checkpoint's (apart from provenance), the recorded source checkpoint hash equal to the file's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssd_runtime.fileio import atomic_write_bytes, sha256_file
from ssd_runtime.onnx_model import OnnxModelInfo, read_onnx_info
from ssd_runtime.preprocess import normalize
from ssd_runtime.postprocess import Detections, compare_detections, postprocess
from ssd_runtime.spec import ModelSpec
from ssd_train.augment import test_transform
from ssd_train.checkpoint import load_model
from ssd_train.synthetic import render_image

VERIFY_SEED = 20_250_101
DEFAULT_VERIFY_BATCH = 3
FP32_TOLERANCE = {"rtol": 1e-3, "atol": 1e-5}
FP16_TOLERANCE = {"rtol": 2e-2, "atol": 2e-2}
#: atol floor in units of the output's range (ulps of max|expected|): rounding error scales with it.
RANGE_ULPS = {"fp32": (32, 2.0**-23), "fp16": (8, 2.0**-11)}


class ParityError(ValueError):
    """An exported model does not match its checkpoint; ``report`` holds the verification report."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def verification_images(count: int, size: int = 300, seed: int = VERIFY_SEED) -> np.ndarray:
    """uint8 (count, size, size, 3) RGB synthetic scenes, resized as evaluation does (bilinear)."""
    empty = np.zeros((0, 4), np.float32)
    return np.stack([test_transform(render_image(seed, i)[0], empty, size)[0] for i in range(count)])


def tensor_stats(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> dict[str, Any]:
    """max abs / rel difference and allclose of two arrays (rel over |expected| > atol)."""
    actual = actual.astype(np.float64)
    expected = expected.astype(np.float64)
    diff = np.abs(actual - expected)
    big = np.abs(expected) > atol
    return {
        "shape": list(actual.shape),
        "finite": bool(np.isfinite(actual).all()),
        "max_abs": float(diff.max(initial=0.0)),
        "max_rel": float((diff[big] / np.abs(expected[big])).max(initial=0.0)),
        "max_abs_expected": float(np.abs(expected).max(initial=0.0)),
        "allclose": bool(np.isfinite(actual).all() and np.allclose(actual, expected, rtol=rtol, atol=atol)),
    }


def _summary(comparison: dict[str, Any], limit: int = 10) -> dict[str, Any]:
    """A comparison dict with the mismatch list cut to ``limit`` entries (the count is kept)."""
    comparison["num_mismatches"] = len(comparison["mismatches"])
    comparison["mismatches"] = comparison["mismatches"][:limit]
    return comparison


def _spec_core(spec: ModelSpec) -> dict:
    data = spec.to_dict()
    data.pop("provenance")
    return data


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verify_onnx(
    onnx_path: str | Path,
    checkpoint: str | Path,
    *,
    batch_size: int | None = None,
    seed: int = VERIFY_SEED,
) -> dict[str, Any]:
    """Run the ONNX file in ONNX Runtime and the checkpoint in PyTorch on the same images; report.

    Returns a JSON-able dict with ``passed`` (bool) and ``failures`` (list of strings); never raises
    for a parity failure (the caller decides). The file's external data is checked before loading.
    """
    onnx_path, checkpoint = Path(onnx_path), Path(checkpoint)
    info = read_onnx_info(onnx_path)
    model, spec = load_model(checkpoint)
    # the exported network has its BatchNorms (norm="batch") folded into the convolutions; compare with
    # the same folded network, so the tolerance measures the export (folding is tested in ssd_train)
    model.fold_norms()
    failures: list[str] = []
    report: dict[str, Any] = {
        "onnx": str(onnx_path),
        "checkpoint": str(checkpoint),
        "variant": info.variant,
        "exporter": info.exporter,
        "opset": info.opset,
    }
    if _spec_core(info.spec) != _spec_core(spec):
        failures.append("the ONNX model spec differs from the checkpoint's")
    source_sha = sha256_file(checkpoint)
    report["source_checkpoint_matches"] = info.source_checkpoint_sha256 == source_sha
    if not report["source_checkpoint_matches"]:
        failures.append("the ONNX was exported from another checkpoint (sha256 differs)")

    session = _session(onnx_path)
    onnx_input = session.get_inputs()[0]
    static = onnx_input.shape[0] if isinstance(onnx_input.shape[0], int) else None
    traced = _int_or_none(_metadata(session).get("ssd300.trace_batch"))
    if static is not None:
        batch = static
    else:
        batch = batch_size or DEFAULT_VERIFY_BATCH
        if traced is not None and batch == traced:
            batch = traced + 1
    report.update({"batch_size": batch, "trace_batch": traced, "dynamic_batch": static is None,
                   "images": f"synthetic scenes, seed {seed}, {batch} images"})
    pixels = verification_images(batch, spec.input_size, seed)
    images = normalize(pixels, spec)
    feed = pixels if info.input_dtype == "uint8" else images
    onnx_outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {info.input_name: feed})))
    with torch.no_grad():
        locs_t, logits_t = model(torch.from_numpy(images))
    locs, logits = locs_t.numpy(), logits_t.numpy()
    priors = spec.make_priors()

    if info.variant == "end2end":
        _check_end2end(info, onnx_outputs, locs, logits, priors, spec, report, failures)
    else:
        _check_tensors(info, onnx_outputs, locs, logits, priors, spec, report, failures)
    report["passed"] = not failures
    report["failures"] = failures
    return report


def _check_tensors(info: OnnxModelInfo, outputs: dict, locs: np.ndarray, logits: np.ndarray,
                   priors: np.ndarray, spec: ModelSpec, report: dict, failures: list[str]) -> None:
    fp16 = info.variant == "fp16"
    tolerance = dict(FP16_TOLERANCE if fp16 else FP32_TOLERANCE)
    report["tolerance"] = tolerance
    stats = {}
    for name, expected in (("locs", locs), ("class_logits", logits)):
        actual = outputs[name]
        if actual.shape != expected.shape:
            failures.append(f"{name}: shape {list(actual.shape)}, expected {list(expected.shape)}")
            return
        ulps, unit = RANGE_ULPS["fp16" if fp16 else "fp32"]
        atol = max(tolerance["atol"], ulps * unit * float(np.abs(expected).max(initial=0.0)))
        tolerance[f"atol_{name}"] = atol
        stats[name] = tensor_stats(actual, expected, rtol=tolerance["rtol"], atol=atol)
        if not stats[name]["finite"]:
            failures.append(f"{name}: inf/NaN in the ONNX output")
        elif not stats[name]["allclose"]:
            failures.append(f"{name}: max abs diff {stats[name]['max_abs']:.3g} beyond rtol "
                            f"{tolerance['rtol']} / atol {atol:.3g}")
    report["outputs"] = stats
    report["detections"] = {}
    for name, settings in (("detection", spec.detection), ("evaluation", spec.evaluation)):
        ours = postprocess(outputs["locs"], outputs["class_logits"], priors, settings, spec.variances)
        ref = postprocess(locs, logits, priors, settings, spec.variances)
        comparison = _summary(compare_detections(ref, ours, settings).to_dict())
        comparison["settings"] = settings.to_dict()
        if info.variant == "fp16":  # also within the FP16 tolerance
            loose = compare_detections(ref, ours, settings, atol=tolerance["atol"]).to_dict()
            comparison["identical_within_fp16_atol"] = loose["identical"]
            comparison["num_mismatches_within_fp16_atol"] = len(loose["mismatches"])
        report["detections"][name] = comparison
        if info.variant != "fp16" and not comparison["identical"]:
            failures.append(f"detections at {name} settings are not identical: {comparison['mismatches'][:3]}")


def padded_to_detections(outputs: dict[str, np.ndarray]) -> list[Detections]:
    """End-to-end outputs (boxes (N, K, 4), scores (N, K), labels (N, K), num_detections (N,)) -> Detections."""
    result = []
    for n, count in enumerate(outputs["num_detections"].astype(np.int64)):
        result.append(Detections(
            outputs["boxes"][n, :count].astype(np.float32),
            outputs["labels"][n, :count].astype(np.int64),
            outputs["scores"][n, :count].astype(np.float32),
        ))
    return result


def _check_end2end(info: OnnxModelInfo, outputs: dict, locs: np.ndarray, logits: np.ndarray,
                   priors: np.ndarray, spec: ModelSpec, report: dict, failures: list[str]) -> None:
    if info.end2end is None:  # read_onnx_info sets it for this variant
        failures.append("end-to-end model without its end2end metadata")
        return
    settings = info.end2end.settings
    ours = padded_to_detections(outputs)
    ref = postprocess(locs, logits, priors, settings, spec.variances)
    comparison = _summary(compare_detections(ref, ours, settings).to_dict())
    comparison["settings"] = settings.to_dict()
    comparison["max_candidates"] = info.end2end.max_candidates
    comparison["images_over_cap"] = candidates_over_cap(logits, settings.min_score, info.end2end.max_candidates)
    report["detections"] = {"end2end": comparison}
    if not comparison["identical"]:
        failures.append(f"end-to-end detections differ from the reference postprocess: {comparison['mismatches'][:3]}")


def candidates_over_cap(logits: np.ndarray, min_score: float, cap: int) -> int:
    """Number of images with more than ``cap`` (class, prior) softmax scores above ``min_score``."""
    x = logits.astype(np.float32)
    x = np.exp(x - x.max(axis=2, keepdims=True))
    scores = x / x.sum(axis=2, keepdims=True)
    counts = (scores[:, :, 1:] > min_score).reshape(len(scores), -1).sum(axis=1)
    return int((counts > cap).sum())


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Save a verification report as JSON (atomically)."""
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    return path


def _metadata(session) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
