"""The check after ``ssd-export engine``: the built engine, run by the runtime's TensorRT backend, against a reference.

No second comparison: a raw engine goes through :func:`ssd_export.parity.check_parity` (the same check
as every ONNX artifact) with the tolerance of the engine's precision; an end-to-end engine's padded
detections go through :func:`ssd_export.parity.check_end2end` (the NumPy reference postprocess of the
checkpoint's outputs, identical detections required). The reference is the checkpoint when one is
given, else the source ONNX in ONNX Runtime on the CPU (for an end-to-end ONNX: its detections,
compared with :func:`~ssd_runtime.postprocess.compare_detections`). An INT8 engine is always checked
against its source Q/DQ ONNX: the INT8 tolerance is not meant to cover the quantization error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ssd_export.defaults import VERIFY_SEED
from ssd_export.parity import (
    SPEC_DIFFERS,
    Tolerance,
    check_end2end,
    check_parity,
    reference_outputs,
    spec_matches,
    summarize_comparison,
    tolerance_for,
    verification_inputs,
)
from ssd_runtime.backends import backend_class
from ssd_runtime.backends.onnxruntime import OrtBackend
from ssd_runtime.end2end import padded_to_detections
from ssd_runtime.onnx_model import OnnxModelInfo
from ssd_runtime.postprocess import compare_detections
from ssd_runtime.variants import PRECISIONS

__all__ = ["check_engine", "engine_tolerance"]


def engine_tolerance(precision: str, tf32: bool = False) -> Tolerance:
    """The parity tolerance of an engine's precision, from :data:`ssd_runtime.variants.PRECISIONS`: fp32
    and fp16 as ``parity.TOLERANCES`` has them (an FP32 engine built with TF32: ``TOLERANCES["tf32"]``),
    int8 the INT8 model's own (two INT8 steps of each output's range, held against its source Q/DQ ONNX,
    not the checkpoint). TF32 in the FP32 layers of FP16 and INT8 engines is within their own, looser
    tolerances."""
    name = "tf32" if precision == "fp32" and tf32 else precision
    if name in PRECISIONS and not PRECISIONS[name].checkpoint_parity:
        return PRECISIONS[name].tolerance
    return tolerance_for(name)


def check_engine(
    engine_path: Path,
    info: OnnxModelInfo,
    checkpoint: Path | None,
    *,
    device: int,
    batch_size: int,
    seed: int = VERIFY_SEED,
    backend_options: dict[str, Any] | None = None,
    precision: str,
    tf32: bool = False,
) -> dict[str, Any]:
    """Run the engine (and its sidecar's checks) through the TensorRT backend; compare; return the report.

    ``info`` describes the source ONNX; ``precision`` and ``tf32`` are the engine's (its tolerance,
    :func:`engine_tolerance`; an end-to-end engine with TF32 has its detections reported, not required
    identical, as FP16's are). The report is
    :func:`check_parity`'s (raw engines) or the end-to-end comparison, plus ``reference_kind``
    ("checkpoint" | "onnx"). Never raises for a parity failure (``passed`` False, ``failures``).
    """
    backend = backend_class("tensorrt").load(engine_path, device=f"cuda:{device}", **(backend_options or {}))
    tolerance = engine_tolerance(precision, tf32)
    try:
        if info.variant == "end2end":
            report = _check_detections(backend, info, checkpoint, batch_size, seed, tolerance)
        else:
            # An INT8 engine is held to its own Q/DQ ONNX even when a checkpoint is given: its tolerance
            # (two INT8 steps of each output's range) bounds the engine's arithmetic, not the quantization
            # error against the float model, which is measured as mAP (ssd-export int8, deploy).
            if precision == "int8":
                checkpoint = None
            reference = checkpoint if checkpoint is not None else OrtBackend(info.path)
            report = check_parity(backend, reference, tolerance, batch_size=batch_size, seed=seed)
    finally:
        backend.close()
    report["backend"]["path"] = None  # the staged file the check ran on is gone; the engine is the sidecar's
    report["reference_kind"] = "checkpoint" if checkpoint is not None else "onnx"
    return report


def _check_detections(backend, info: OnnxModelInfo, checkpoint: Path | None, batch_size: int,
                      seed: int, tolerance: Tolerance) -> dict[str, Any]:
    """An end-to-end engine's detections vs the checkpoint's reference postprocess, or vs the source ONNX's:
    identical required where ``tolerance`` requires it (FP32), else reported (TF32)."""
    failures: list[str] = []
    report: dict[str, Any] = {
        "backend": {"name": type(backend).__name__, "path": None, "device": str(backend.device),
                    "input_kind": backend.input_kind},
        "precision": tolerance.precision, "batch_size": batch_size, "seed": seed,
        "images": f"synthetic scenes, seed {seed}, {batch_size} images",
    }  # fmt: skip
    if checkpoint is not None:
        reference = reference_outputs(checkpoint, batch_size, seed)
        report["reference"] = reference.source
        report["spec_matches"] = spec_matches(backend.spec, reference.spec)
        if not report["spec_matches"]:
            failures.append(SPEC_DIFFERS)
        check_end2end(info, backend, reference, report, failures)
    else:
        source = OrtBackend(info.path)
        report["reference"] = f"{info.path} (ONNX Runtime, CPU)"
        report["spec_matches"] = spec_matches(backend.spec, source.spec)
        _, images = verification_inputs(info.spec, batch_size, seed)
        settings = info.end2end.settings
        ref = padded_to_detections(*source.infer(images))
        ours = padded_to_detections(*backend.infer(images))
        comparison = summarize_comparison(compare_detections(ref, ours, settings).to_dict())
        comparison["settings"] = settings.to_dict()
        report["detections"] = {"end2end": comparison}
        if not comparison["identical"]:
            failures.append(f"end-to-end detections differ from the source ONNX's: {comparison['mismatches'][:3]}")
    comparison = report.get("detections", {}).get("end2end")
    if not tolerance.identical_detections and comparison is not None:  # judged by mAP (deploy, eval), not identity
        comparison["required_identical"] = False
        if not comparison["identical"]:
            report["reported"] = [failures.pop()]  # the mismatch, which both comparisons append last
    report["passed"] = not failures
    report["failures"] = failures
    return report
