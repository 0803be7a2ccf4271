"""Parity of an exported ONNX file with its PyTorch checkpoint: a thin ONNX layer over :mod:`ssd_export.parity`.

What is ONNX-specific stays here; the comparison itself is :func:`ssd_export.parity.check_parity`
through the runtime's :class:`~ssd_runtime.backends.onnxruntime.OrtBackend` (CPU):

- TensorRT's ONNX-parser rules (:mod:`ssd_export.tensorrt_rules`): a violation is a failure (the report's
  ``tensorrt_rules``), since no TensorRT 10.3-11.x would parse the file;
- the file: external data that could escape its folder refused and the metadata read back
  (:func:`ssd_runtime.onnx_model.read_onnx_info`), the recorded source checkpoint sha256 equal to the
  checkpoint file's, the spec equal to the checkpoint's apart from provenance;
- the batch: a static batch is verified at that batch; a dynamic one at ``batch_size`` (default 3),
  moved off the batch size the graph was traced at (``OnnxModelInfo.trace_batch``);
- the tolerance of the variant's precision (both from :mod:`ssd_runtime.variants`): ``fp32`` /
  ``uint8-nhwc`` at ``TOLERANCES["fp32"]`` (identical detections required), ``fp16`` at
  ``TOLERANCES["fp16"]`` (detections reported), ``int8`` (a Q/DQ model) at ``PRECISIONS["int8"]``'s
  (:data:`ssd_export.int8.quantize.INT8_PARITY`), reported but not judged (its accuracy is judged by mAP);
- ``end2end`` (NMS inside the graph; OrtBackend returns its padded detections): the graph's
  detections compared with the NumPy reference postprocess of the checkpoint's outputs at the
  baked-in settings (:func:`ssd_export.parity.check_end2end`): identical detections required
  (``docs/reference.md``, "Identical detections").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from ssd_export.defaults import DEFAULT_VERIFY_BATCH, VERIFY_SEED
from ssd_export.parity import (
    SPEC_DIFFERS,
    ParityError,
    check_end2end,
    check_parity,
    reference_outputs,
    spec_matches,
    verification_images,
    write_report,
)
from ssd_export.tensorrt_rules import check_tensorrt_rules, declared_float_nodes
from ssd_runtime.backends.onnxruntime import OrtBackend
from ssd_runtime.fileio import sha256_file
from ssd_runtime.onnx_model import OnnxModelInfo, read_onnx_info
from ssd_runtime.variants import PRECISIONS, VARIANT_PRECISION  # VARIANT_PRECISION: re-exported

__all__ = [
    "DEFAULT_VERIFY_BATCH",
    "VARIANT_PRECISION",
    "VERIFY_SEED",
    "ParityError",
    "tensorrt_rules_report",
    "verification_images",
    "verify_onnx",
    "write_report",
]


def verify_onnx(
    onnx_path: str | Path,
    checkpoint: str | Path,
    *,
    batch_size: int | None = None,
    seed: int = VERIFY_SEED,
) -> dict[str, Any]:
    """Run the ONNX file in ONNX Runtime and the checkpoint in PyTorch on the same images; report.

    Returns a JSON-able dict with ``passed`` (bool) and ``failures`` (list of strings), the ONNX
    facts (``onnx``, ``checkpoint``, ``variant``, ``exporter``, ``opset``, ``source_checkpoint_matches``,
    ``batch_size``, ``trace_batch``, ``dynamic_batch``) and the :func:`~ssd_export.parity.check_parity`
    report (``end2end``: ``detections["end2end"]`` instead); never raises for a parity failure (the
    caller decides). The file's external data is checked before loading.
    """
    onnx_path, checkpoint = Path(onnx_path), Path(checkpoint)
    info = read_onnx_info(onnx_path)  # external data checked before anything is loaded
    failures: list[str] = []
    report: dict[str, Any] = {
        "onnx": str(onnx_path),
        "checkpoint": str(checkpoint),
        "variant": info.variant,
        "exporter": info.exporter,
        "opset": info.opset,
    }
    report["source_checkpoint_matches"] = info.source_checkpoint_sha256 == sha256_file(checkpoint)
    if not report["source_checkpoint_matches"]:
        failures.append("the ONNX was exported from another checkpoint (sha256 differs)")
    report["tensorrt_rules"] = tensorrt_rules_report(onnx_path, info)
    failures += [f"TensorRT rule: {v}" for v in report["tensorrt_rules"]["violations"]]

    if info.variant == "end2end":
        backend = OrtBackend(onnx_path)
        batch = _batch_fields(backend.batch_dim, info, batch_size, seed, report)
        reference = reference_outputs(checkpoint, batch, seed)
        report["spec_matches"] = spec_matches(info.spec, reference.spec)
        if not report["spec_matches"]:
            failures.append(SPEC_DIFFERS)
        check_end2end(info, backend, reference, report, failures)
    else:
        backend = OrtBackend(onnx_path)
        batch = _batch_fields(backend.batch_dim, info, batch_size, seed, report)
        if info.variant == "int8":
            # reported, not judged, as `ssd-export int8` reports it: INT8's accuracy is judged by its mAP
            # (ssd-runtime eval --checkpoint), since its outputs stray from FP32's by design
            parity = check_parity(backend, checkpoint, PRECISIONS["int8"].tolerance, batch_size=batch, seed=seed)
            parity["judged"] = False
            parity["outside_tolerance"] = parity.pop("failures")
        else:
            parity = check_parity(backend, checkpoint, VARIANT_PRECISION[info.variant], batch_size=batch, seed=seed)
            failures += parity.pop("failures")
        parity.pop("passed")
        parity["backend"].pop("path")  # the file is report["onnx"]
        report.update(parity)
    report["passed"] = not failures
    report["failures"] = failures
    return report


def tensorrt_rules_report(onnx_path: str | Path, info: OnnxModelInfo | None = None) -> dict[str, Any]:
    """TensorRT's ONNX-parser rules (:func:`~ssd_export.tensorrt_rules.check_tensorrt_rules`) on a file:
    ``{"violations": [...], "float_nodes": [...]}``; an INT8 model's Convs declared float in its metadata
    are exempt from the Q/DQ rule that every Conv be quantized."""
    info = info if info is not None else read_onnx_info(onnx_path)  # checks external data before loading
    float_nodes = declared_float_nodes(info.quantization)
    violations = check_tensorrt_rules(onnx.load(str(onnx_path)), float_nodes=float_nodes)
    return {"violations": violations, "float_nodes": float_nodes}


def _batch_fields(batch_dim: int | str | None, info: OnnxModelInfo, requested: int | None, seed: int,
                  report: dict) -> int:
    """The verification batch: the static one, else ``requested`` (default 3) moved off the traced one."""
    static = batch_dim if isinstance(batch_dim, int) else None
    if static is not None:
        batch = static
    else:
        batch = requested or DEFAULT_VERIFY_BATCH
        if info.trace_batch is not None and batch == info.trace_batch:
            batch = info.trace_batch + 1
    report.update({"batch_size": batch, "trace_batch": info.trace_batch, "dynamic_batch": static is None,
                   "images": f"synthetic scenes, seed {seed}, {batch} images"})
    return batch
