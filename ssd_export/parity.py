"""Parity of any deployed model with its checkpoint, through the runtime's ``Backend`` interface.

One check serves every artifact: the backend under test and the checkpoint (served in FP32 on the CPU
by :class:`ssd_train.backend.TorchCheckpointBackend`, BatchNorms folded as every export folds them)
run ``infer`` on the same generated scenes, and the raw outputs and the detections are compared under
the tolerance of the artifact's precision (:data:`TOLERANCES`). What differs between artifacts is the
backend object and the tolerance, never the check::

    from ssd_export.parity import TOLERANCES, Tolerance, check_parity
    from ssd_runtime.backends.onnxruntime import OrtBackend

    check_parity(OrtBackend("ssd300.onnx"), "model.pt", "fp32")          # identical detections required
    check_parity(OrtBackend("ssd300-fp16.onnx"), "model.pt", "fp16")     # detections reported
    # an INT8 model is one more call with its own tolerance (ssd-export int8 reports this one):
    check_parity(OrtBackend("ssd300_int8.onnx"), "model.pt",
                 Tolerance("int8", rtol=..., atol=..., range_ulps=..., ulp=..., identical_detections=False))
    # planned: a TensorRT engine will be one more call with its backend:
    check_parity(TensorRTBackend.load("ssd300.engine", device="cuda"), "model.pt", "fp16")

The images are the generated scenes of :mod:`ssd_runtime.scenes` (what ``ssd-train data`` writes) at a
seed no tracing or test training uses (natural-looking activations, not noise), resized as the
evaluation pipeline does (the model's preprocessing), fed as uint8 (N, S, S, 3) RGB to ``uint8-nhwc``
backends and normalized float32 (N, 3, S, S) to the others. Only a checkpoint reference needs torch
(and :mod:`ssd_train`): an engine checked against its ONNX runs where neither is installed.
Checks: the backend's spec equals the checkpoint's apart from provenance; each output has the
reference's shape (N, P, 4) / (N, P, C) with P = spec.num_priors, is finite and within the tolerance;
the NumPy postprocess of both at the spec's detection and evaluation settings gives *identical
detections* (``docs/reference.md``, "Identical detections") where the precision requires it, and the
comparison is reported otherwise. An end-to-end model (NMS inside) is checked by :func:`check_end2end`:
its padded detections against the NumPy postprocess of the checkpoint's outputs at the baked settings,
identical required. The ONNX-specific checks (metadata, provenance, trace batch) are a thin layer in
:mod:`ssd_export.onnx.verify`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssd_export.defaults import DEFAULT_VERIFY_BATCH, VERIFY_SEED
from ssd_runtime.backends import Backend, to_numpy
from ssd_runtime.end2end import padded_to_detections
from ssd_runtime.fileio import atomic_write_bytes
from ssd_runtime.onnx_model import OnnxModelInfo
from ssd_runtime.postprocess import compare_detections, postprocess
from ssd_runtime.preprocess import normalize, to_model_pixels
from ssd_runtime.scenes import render_image
from ssd_runtime.spec import DEFAULT_PREPROCESSING, ModelSpec
from ssd_runtime.variants import RAW_OUTPUTS, Tolerance
from ssd_runtime.variants import TOLERANCES as _TOLERANCES

__all__ = [
    "DEFAULT_VERIFY_BATCH",
    "TOLERANCES",
    "VERIFY_SEED",
    "ParityError",
    "ReferenceOutputs",
    "SPEC_DIFFERS",
    "Tolerance",
    "candidates_over_cap",
    "check_end2end",
    "check_parity",
    "reference_outputs",
    "spec_matches",
    "summarize_comparison",
    "tensor_stats",
    "tolerance_for",
    "verification_images",
    "verification_inputs",
    "write_report",
]


class ParityError(ValueError):
    """A deployed model does not match its checkpoint; ``report`` holds the verification report."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


#: Tolerance by precision, for the precisions checked against the checkpoint by name (fp32, fp16, tf32):
#: a view of :data:`ssd_runtime.variants.PRECISIONS`, where each tolerance and its measurements live. INT8's
#: (:data:`ssd_export.int8.quantize.INT8_PARITY`) is passed as a :class:`Tolerance`.
TOLERANCES: dict[str, Tolerance] = _TOLERANCES


def tolerance_for(precision: str | Tolerance) -> Tolerance:
    """The :class:`Tolerance` of ``precision`` (a key of :data:`TOLERANCES`), or ``precision`` itself."""
    if isinstance(precision, Tolerance):
        return precision
    if precision not in TOLERANCES:
        raise ValueError(f"no parity tolerance for precision {precision!r} (known: {', '.join(TOLERANCES)}); "
                         "pass a ssd_export.parity.Tolerance")
    return TOLERANCES[precision]


def verification_images(
    count: int, size: int = 300, seed: int = VERIFY_SEED, preprocessing: str = DEFAULT_PREPROCESSING
) -> np.ndarray:
    """uint8 (count, size, size, 3) RGB generated scenes (:func:`ssd_runtime.scenes.render_image`), resized
    as evaluation and the runtime do (:func:`~ssd_runtime.preprocess.to_model_pixels`: the model's
    ``preprocessing``). NumPy and Pillow only: an engine is checked where torch is not installed."""
    return np.stack([to_model_pixels(render_image(seed, i)[0], size, preprocessing) for i in range(count)])


def verification_inputs(spec: ModelSpec, count: int, seed: int = VERIFY_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The verification scenes as uint8 (N, S, S, 3) RGB pixels and as normalized float32 (N, 3, S, S)."""
    pixels = verification_images(count, spec.input_size, seed, spec.preprocessing)
    return pixels, normalize(pixels, spec)


@dataclass(frozen=True)
class ReferenceOutputs:
    """The checkpoint's raw FP32 outputs on ``verification_inputs(spec, batch_size, seed)``.

    locs float32 (N, P, 4), class_logits float32 (N, P, C); source: what produced them (for reports).
    Compute once with :func:`reference_outputs` to check several artifacts against one checkpoint.
    """

    spec: ModelSpec
    locs: np.ndarray
    class_logits: np.ndarray
    seed: int
    source: str

    @property
    def batch_size(self) -> int:
        return int(self.locs.shape[0])


def reference_outputs(
    reference: str | os.PathLike | Backend,
    batch_size: int = DEFAULT_VERIFY_BATCH,
    seed: int = VERIFY_SEED,
) -> ReferenceOutputs:
    """Run the reference on the verification scenes: a checkpoint path (PyTorch FP32 on the CPU) or a Backend."""
    if isinstance(reference, (str, os.PathLike)):
        from ssd_train.backend import TorchCheckpointBackend

        source = str(reference)
        reference = TorchCheckpointBackend(reference, device="cpu")
    else:
        described = _describe(reference)
        source = described["name"] + (f"({described['path']})" if described["path"] else "")
    locs, class_logits = _run(reference, batch_size, seed)
    return ReferenceOutputs(reference.spec, locs, class_logits, seed, source)


#: The failure line when an artifact's spec is not its checkpoint's.
SPEC_DIFFERS = "the model spec differs from the checkpoint's (apart from provenance)"


def spec_matches(a: ModelSpec, b: ModelSpec) -> bool:
    """Whether two specs are equal apart from provenance (which records where an artifact came from)."""
    return _spec_core(a) == _spec_core(b)


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


def summarize_comparison(comparison: dict[str, Any], limit: int = 10) -> dict[str, Any]:
    """A comparison dict with the mismatch list cut to ``limit`` entries (the count is kept)."""
    comparison["num_mismatches"] = len(comparison["mismatches"])
    comparison["mismatches"] = comparison["mismatches"][:limit]
    return comparison


def check_parity(
    backend: Backend,
    reference: str | os.PathLike | Backend | ReferenceOutputs,
    tolerance: str | Tolerance = "fp32",
    *,
    batch_size: int = DEFAULT_VERIFY_BATCH,
    seed: int = VERIFY_SEED,
) -> dict[str, Any]:
    """Check ``backend`` against its checkpoint on ``batch_size`` verification scenes; return the report.

    Args:
        backend: any runtime backend (``spec``, ``input_kind``, ``device``, ``infer``); host or device
            outputs. A static-batch backend needs ``batch_size`` equal to its batch.
        reference: the checkpoint (path), a backend serving it, or its :class:`ReferenceOutputs` at
            this ``batch_size`` and ``seed``.
        tolerance: a precision (key of :data:`TOLERANCES`: ``fp32``, ``fp16``, ``tf32``) or a :class:`Tolerance`.
        batch_size: number of scenes; pick one other than the batch the artifact was traced at.
        seed: seed of the generated scenes.

    Returns a JSON-able dict: ``passed`` (bool), ``failures`` (list of strings), ``backend``,
    ``reference``, ``precision``, ``tolerance`` (with ``atol_locs`` / ``atol_class_logits``, the atol
    applied to each output), ``batch_size``, ``seed``, ``images``, ``spec_matches``, ``outputs``
    (per output: :func:`tensor_stats`), ``detections`` (``detection`` and ``evaluation``: the
    :func:`~ssd_runtime.postprocess.compare_detections` summary and the settings; where identical
    detections are not required, also ``identical_within_<precision>_atol``). Never raises for a
    parity failure (the caller decides; :class:`ParityError` carries a report).
    """
    tol = tolerance_for(tolerance)
    if not isinstance(reference, ReferenceOutputs):
        reference = reference_outputs(reference, batch_size, seed)
    elif (reference.batch_size, reference.seed) != (batch_size, seed):
        raise ValueError(f"reference outputs are for batch {reference.batch_size}, seed {reference.seed}; "
                         f"the check asked for batch {batch_size}, seed {seed}")
    spec = reference.spec
    failures: list[str] = []
    report: dict[str, Any] = {
        "backend": _describe(backend),
        "reference": reference.source,
        "precision": tol.precision,
        "tolerance": {"rtol": tol.rtol, "atol": tol.atol},
        "batch_size": batch_size,
        "seed": seed,
        "images": f"synthetic scenes, seed {seed}, {batch_size} images",
        "spec_matches": spec_matches(backend.spec, spec),
        "outputs": {},
        "detections": {},
    }
    if not report["spec_matches"]:
        failures.append(SPEC_DIFFERS)
    outputs = _run(backend, batch_size, seed, spec)
    if _check_outputs(outputs, (reference.locs, reference.class_logits), tol, report, failures):
        _check_detections(outputs, reference, tol, report, failures)
    report["passed"] = not failures
    report["failures"] = failures
    return report


def check_end2end(info: OnnxModelInfo, backend: Backend, reference: ReferenceOutputs, report: dict,
                  failures: list[str]) -> None:
    """An end-to-end backend's padded detections (ONNX Runtime, TensorRT) vs the NumPy postprocess of the
    checkpoint's outputs at the baked settings (identical required); fills ``report["detections"]``."""
    if info.end2end is None:  # read_onnx_info sets it for this variant
        failures.append("end-to-end model without its end2end metadata")
        return
    spec, settings = reference.spec, info.end2end.settings
    _, images = verification_inputs(spec, reference.batch_size, reference.seed)
    ours = padded_to_detections(*backend.infer(images))
    ref = postprocess(reference.locs, reference.class_logits, spec.make_priors(), settings, spec.variances)
    comparison = summarize_comparison(compare_detections(ref, ours, settings).to_dict())
    comparison["settings"] = settings.to_dict()
    comparison["max_candidates"] = info.end2end.max_candidates
    comparison["images_over_cap"] = candidates_over_cap(reference.class_logits, settings.min_score,
                                                        info.end2end.max_candidates)
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


def _run(backend: Backend, batch_size: int, seed: int, spec: ModelSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``backend.infer`` on the verification scenes (in its input kind) -> float32 host (locs, class_logits)."""
    pixels, images = verification_inputs(spec or backend.spec, batch_size, seed)
    locs, class_logits = backend.infer(pixels if backend.input_kind == "uint8-nhwc" else images)
    return to_numpy(locs), to_numpy(class_logits)


def _check_outputs(outputs: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray],
                   tol: Tolerance, report: dict, failures: list[str]) -> bool:
    """Shapes, finiteness and closeness of (locs, class_logits); False when a shape differs."""
    for name, actual, wanted in zip(RAW_OUTPUTS, outputs, expected):
        if actual.shape != wanted.shape:
            failures.append(f"{name}: shape {list(actual.shape)}, expected {list(wanted.shape)}")
            return False
        atol = tol.atol_for(wanted)
        report["tolerance"][f"atol_{name}"] = atol
        stats = report["outputs"][name] = tensor_stats(actual, wanted, rtol=tol.rtol, atol=atol)
        if not stats["finite"]:
            failures.append(f"{name}: inf/NaN in the backend's output")
        elif not stats["allclose"]:
            failures.append(f"{name}: max abs diff {stats['max_abs']:.3g} beyond rtol {tol.rtol} / atol {atol:.3g}")
    return True


def _check_detections(outputs: tuple[np.ndarray, np.ndarray], reference: ReferenceOutputs, tol: Tolerance,
                      report: dict, failures: list[str]) -> None:
    """NumPy postprocess of both at the detection and evaluation settings; compare (required or reported)."""
    spec = reference.spec
    priors = spec.make_priors()
    for name, settings in (("detection", spec.detection), ("evaluation", spec.evaluation)):
        ours = postprocess(*outputs, priors, settings, spec.variances)
        ref = postprocess(reference.locs, reference.class_logits, priors, settings, spec.variances)
        comparison = summarize_comparison(compare_detections(ref, ours, settings).to_dict())
        comparison["settings"] = settings.to_dict()
        if not tol.identical_detections:  # reported, and also compared within the precision's atol
            loose = compare_detections(ref, ours, settings, atol=tol.atol).to_dict()
            comparison[f"identical_within_{tol.precision}_atol"] = loose["identical"]
            comparison[f"num_mismatches_within_{tol.precision}_atol"] = len(loose["mismatches"])
        elif not comparison["identical"]:
            failures.append(f"detections at {name} settings are not identical: {comparison['mismatches'][:3]}")
        report["detections"][name] = comparison


def _describe(backend: Backend) -> dict[str, Any]:
    """Plain data naming a backend: class, file (if any), device, input kind."""
    return {"name": type(backend).__name__, "path": None if backend.path is None else str(backend.path),
            "device": str(backend.device), "input_kind": backend.input_kind}


def _spec_core(spec: ModelSpec) -> dict:
    data = spec.to_dict()
    data.pop("provenance")
    return data
