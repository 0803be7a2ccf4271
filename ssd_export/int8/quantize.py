"""INT8 by explicit quantization: an fp32 toolkit ONNX -> a Q/DQ ONNX that TensorRT and ONNX Runtime both take.

``quantize_int8("ssd300.onnx", "calibration/set.json", "ssd300_int8.onnx")`` runs ONNX Runtime's
``quantize_static`` with the settings TensorRT needs (``docs/export.md``, "INT8"):

- ``QuantFormat.QDQ``, activations and weights ``QInt8``, ``per_channel=True``, ``extra_options``
  ``ActivationSymmetric`` / ``WeightSymmetric`` (every zero point 0) and ``QuantizeBias=False`` (biases stay
  float32: TensorRT's DequantizeLinear takes no INT32);
- calibration ``MinMax`` (``max``), ``Entropy`` or ``Percentile`` (``--percentile``), fed one batch at a
  time (``CalibStridedMinMax=1``, which bounds the memory of every method) from
  :meth:`ssd_export.int8.calibration.CalibrationSet.batches` - hash-checked images, preprocessed by the
  runtime exactly as at inference;
- kept in float (``nodes_to_exclude``, found by structure in :mod:`ssd_export.qdq_rules`): the conv4_3 L2
  norm and its rescale, and the ``Transpose/Reshape/Concat`` tail after the heads; ORT also puts a Q/DQ
  pair on every Conv output, so the pairs on the head convs' outputs are taken off afterwards
  (:func:`~ssd_export.qdq_rules.strip_qdq`): the heads read INT8 and write float ``locs`` / ``class_logits``.

The result is checked by :func:`~ssd_export.tensorrt_rules.check_tensorrt_rules` (TensorRT's parser rules
and :func:`~ssd_export.qdq_rules.check_qdq_rules`; a violation fails the command)
and the ONNX checker, carries the spec with its provenance (source ONNX and calibration manifest sha256,
quantizer, version, settings) and variant ``int8`` in its metadata, is written to a temporary file beside
the output and moved into place only when every check passed. The parity against the fp32 source is
reported (``<output>.int8.json``), never judged: INT8 accuracy is judged by mAP (``ssd-runtime eval``).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from ssd_export.int8.calibration import DEFAULT_BATCH, CalibrationError, CalibrationSet
from ssd_export.defaults import DEFAULT_INT8_METHOD, DEFAULT_PERCENTILE, DEFAULT_QUANTIZER, INT8_METHODS, QUANTIZERS
from ssd_export.qdq_rules import (
    MIN_QDQ_OPSET, QDQ_OPS, TENSORRT_QDQ, FloatRegions, float_regions, strip_qdq,
)
from ssd_export.parity import check_parity, write_report
from ssd_export.tensorrt_rules import check_tensorrt_rules
from ssd_runtime.backends.onnxruntime import OrtBackend
from ssd_runtime.fileio import atomic_path, sha256_file
from ssd_runtime.onnx_model import OnnxModelInfo, onnx_metadata, read_onnx_info, write_onnx_metadata
from ssd_runtime.variants import PRECISIONS

__all__ = ["INT8_PARITY", "QUANTIZER", "Int8Error", "quantize_int8", "quantizer_settings"]

QUANTIZER = "onnxruntime.quantization"
_CALIBRATE_METHODS = {"max": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                      "percentile": CalibrationMethod.Percentile}
#: The reported (never judged) parity of the INT8 model with its fp32 source: atol of two INT8 steps of
#: each output's range; detections compared, not required identical (:data:`ssd_runtime.variants.PRECISIONS`).
INT8_PARITY = PRECISIONS["int8"].tolerance


class Int8Error(ValueError):
    """The model cannot be quantized (wrong variant, already quantized, bad settings) or its Q/DQ graph
    breaks TensorRT's rules; nothing was written."""


def quantizer_settings(method: str, percentile: float, exclude: Sequence[str], regions: FloatRegions) -> dict[str, Any]:
    """The quantization settings as recorded in the model (metadata, provenance) and the report."""
    settings: dict[str, Any] = {
        **TENSORRT_QDQ,
        "method": method,
        "calibrate_method": _CALIBRATE_METHODS[method].name,
        "calibration_batches_per_step": 1,
        "excluded_nodes": {**regions.to_dict(), "user": list(exclude)},
    }
    if method == "percentile":
        settings["percentile"] = percentile
    return settings


def quantize_int8(
    onnx_path: str | os.PathLike,
    calibration: str | os.PathLike | CalibrationSet,
    output: str | os.PathLike,
    *,
    method: str = DEFAULT_INT8_METHOD,
    percentile: float = DEFAULT_PERCENTILE,
    batch_size: int = DEFAULT_BATCH,
    data_root: str | os.PathLike | None = None,
    exclude: Sequence[str] = (),
    parity: bool = True,
    search: Mapping[str, Any] | None = None,
    quantizer: str = DEFAULT_QUANTIZER,
    calibrated: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Quantize the fp32 export ``onnx_path`` to the Q/DQ INT8 model ``output``; return the report (a dict).

    Args:
        calibration: a calibration manifest (``ssd-export calibration``) or a loaded :class:`CalibrationSet`;
            its class list must be the model's.
        method: ``max`` (MinMax), ``entropy`` or ``percentile``.
        percentile: the percentile method's percentile of |activation| (0 < p <= 100).
        batch_size: calibration images per inference (a static-batch model needs its own batch).
        data_root: where the manifest's dataset is now (when it moved).
        exclude: more node names to keep in float (beside the L2 norm and the output tail).
        parity: run the fp32-vs-INT8 parity on the verification scenes and report it.
        search: the summary of a sensitive-layer search (:func:`ssd_export.int8.search.search_int8`):
            its ``kept_float`` Convs are put back in float after quantization (float input and fp32
            weight: :func:`ssd_export.int8.search.keep_float`, the graph the search measured), recorded
            as ``excluded_nodes.sensitive``; the summary is recorded as ``settings.search``.
        quantizer: ``onnxruntime`` (``quantize_static``, above) or ``modelopt`` (NVIDIA ModelOpt's ONNX
            quantizer, an optional extra in its own environment: :mod:`ssd_export.int8.modelopt`; methods
            ``max`` and ``entropy``); the graph rules, checks, metadata and report are the same.
        calibrated: an INT8 model an earlier call wrote from the same source, calibration set and
            settings without ``search`` (the search's baseline): its quantization is reused instead of
            calibrating again (ONNX Runtime's calibration is most of the time: about 20 s for the
            width-0.125 model, minutes at full width). Its recorded hashes and settings are checked.

    The report: ``output``, ``source`` (path, sha256), ``calibration`` (manifest, sha256, images,
    batches), ``quantizer``, ``settings``, ``qdq_stripped`` (head-output Q nodes removed; none when
    ``calibrated`` had them removed already), ``calibration_reused_from`` (with ``calibrated``),
    ``rules`` (``violations``: empty), ``parity`` (a :func:`ssd_export.parity.check_parity` report, informative),
    ``seconds``, ``size_bytes``, ``report_path`` (``<output>.int8.json``, where it is also saved).

    Raises :class:`Int8Error` (see its doc), :class:`~ssd_runtime.onnx_model.OnnxModelError` (not a
    toolkit ONNX), :class:`~ssd_export.int8.calibration.CalibrationError` (missing/changed calibration images,
    another class list) or FileNotFoundError; on any error nothing is written and no temporary file stays.
    """
    start = time.perf_counter()
    onnx_path, output = Path(onnx_path), Path(output)
    if method not in INT8_METHODS:
        raise Int8Error(f"unknown calibration method {method!r}; choose one of {', '.join(INT8_METHODS)}")
    if not 0.0 < percentile <= 100.0:
        raise Int8Error(f"percentile must be in (0, 100], got {percentile}")
    if quantizer not in QUANTIZERS:
        raise Int8Error(f"unknown quantizer {quantizer!r}; choose one of {', '.join(QUANTIZERS)}")
    quantizer_name, quantizer_version = QUANTIZER, onnxruntime.__version__
    if quantizer == "modelopt":
        if search is not None:
            raise Int8Error("the sensitive-layer search (search=) works on ONNX Runtime's Q/DQ graph; "
                            "quantize with quantizer='onnxruntime'")
        quantizer_name, quantizer_version = _modelopt_quantizer(method)
    if output.resolve() == onnx_path.resolve():
        raise Int8Error(f"{output}: the INT8 model would overwrite its fp32 source; choose another output")
    info = read_onnx_info(onnx_path)  # refuses a non-toolkit ONNX, naming the file
    source = onnx.load(str(onnx_path))
    _check_source(onnx_path, info, source)
    regions = float_regions(source)
    if regions is None:
        raise Int8Error(f"{onnx_path}: the conv4_3 L2 norm or the output heads are not found in the graph; "
                        "quantize an fp32 export of this toolkit (ssd-export onnx --variant fp32)")
    names = {n.name for n in source.graph.node}
    sensitive = list(search["kept_float"]) if search is not None else []
    unknown = [n for n in [*exclude, *sensitive] if n not in names]
    if unknown:
        raise Int8Error(f"{onnx_path}: --exclude names nodes the graph does not have: {', '.join(unknown)}")
    calib = calibration if isinstance(calibration, CalibrationSet) else CalibrationSet.load(calibration, data_root=data_root)
    try:
        calib.check_classes(info.spec)
    except CalibrationError as exc:
        raise CalibrationError(f"refused to calibrate {onnx_path}: {exc}") from exc
    static_batch = _static_batch(source)
    if static_batch is not None and batch_size != static_batch:
        raise Int8Error(f"{onnx_path} has a static batch of {static_batch}: pass batch_size={static_batch} "
                        "(--batch-size), or quantize a dynamic-batch export")
    batches = calib.batches(info.spec, batch_size)  # verifies every image's sha256 first
    num_batches = len(calib) // batch_size if static_batch else -(-len(calib) // batch_size)
    reader = _BatchReader(batches, info.input_name, num_batches)

    if quantizer == "modelopt":
        from ssd_export.int8.modelopt import modelopt_float_convs, modelopt_settings

        quantizer_float = modelopt_float_convs(source)  # ModelOpt's own small-channel Convs, declared float
        settings = modelopt_settings(method, static_batch or batch_size, exclude, regions, quantizer_float)
    else:
        quantizer_float = []
        settings = quantizer_settings(method, percentile, exclude, regions)
    if search is not None:
        settings["excluded_nodes"]["sensitive"] = sensitive
        settings["search"] = dict(search)
    excluded = [*regions.l2_norm, *regions.tail, *exclude]
    quantization = {
        "quantizer": quantizer_name,
        "quantizer_version": quantizer_version,
        "settings": settings,
        "source_onnx_sha256": sha256_file(onnx_path),
        "calibration_manifest_sha256": calib.sha256,
        "calibration_manifest": calib.path.name,
    }
    spec = info.spec.with_provenance(
        onnx_variant="int8",
        source_onnx_sha256=quantization["source_onnx_sha256"],
        calibration_manifest_sha256=calib.sha256,
        quantizer=quantizer_name,
        quantizer_version=quantizer_version,
        quantization_settings=json.dumps(settings, sort_keys=True),
    )
    report: dict[str, Any] = {
        "output": str(output),
        "source": {"path": str(onnx_path), "sha256": quantization["source_onnx_sha256"], "variant": info.variant},
        "quantizer": {"name": quantizer_name, "version": quantizer_version},
        "settings": settings,
    }
    with atomic_path(output) as tmp:
        quantize_start = time.perf_counter()
        if calibrated is not None:
            _check_calibrated(Path(calibrated), quantization)
            shutil.copyfile(calibrated, tmp)
            report["calibration_reused_from"] = str(calibrated)
            reader.images, reader.batches = len(calib), num_batches
        elif quantizer == "modelopt":
            from ssd_export.int8.modelopt import quantize_modelopt

            reader.images, reader.batches = quantize_modelopt(
                onnx_path, Path(tmp), batches, input_name=info.input_name, batch_size=static_batch or batch_size,
                num_batches=num_batches, method=method, excluded=excluded)
        else:
            with _quiet():
                quantize_static(
                    str(onnx_path), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=_CALIBRATE_METHODS[method], nodes_to_exclude=excluded,
                    extra_options=_extra_options(method, percentile),
                )
        quantize_seconds = time.perf_counter() - quantize_start
        model = onnx.load(str(tmp))
        head_outputs = [n.output[0] for n in model.graph.node if n.name in set(regions.heads)]
        report["qdq_stripped"] = strip_qdq(model, head_outputs)
        if sensitive:
            from ssd_export.int8.search import (
                keep_float,  # the search's own surgery (it imports this module)
            )

            model = keep_float(model, source, sensitive)
        write_onnx_metadata(model, onnx_metadata(
            spec, "int8", source_checkpoint_sha256=info.source_checkpoint_sha256, exporter=info.exporter,
            opset=info.opset, trace_batch=info.trace_batch, quantization=quantization,
        ))
        model.doc_string = f"{source.doc_string} -> INT8 Q/DQ ({quantizer_name} {quantizer_version}, {method})"
        # TensorRT's parser rules, the Q/DQ rules (check_qdq_rules) among them
        violations = check_tensorrt_rules(model, float_nodes=[*exclude, *sensitive, *quantizer_float])
        report["rules"] = {"violations": violations}
        if violations:
            raise Int8Error(f"{output}: the Q/DQ graph breaks TensorRT's rules ({'; '.join(violations[:5])}"
                            f"{'; ...' if len(violations) > 5 else ''}); nothing was written")
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as exc:
            raise Int8Error(f"{output}: the Q/DQ graph fails the ONNX checker: {exc}; nothing was written") from exc
        onnx.save(model, str(tmp))
        if parity:
            parity_start = time.perf_counter()
            report["parity"] = check_parity(OrtBackend(tmp), OrtBackend(onnx_path), INT8_PARITY,
                                            **({"batch_size": static_batch} if static_batch else {}))
            report["parity"]["backend"]["path"] = str(output)
            report["parity"]["note"] = "informative: INT8 accuracy is judged by mAP (ssd-runtime eval)"
            report["parity_seconds"] = round(time.perf_counter() - parity_start, 3)
    report["calibration"] = {"manifest": str(calib.path), "sha256": calib.sha256, "root": str(calib.root),
                             "images": reader.images, "batches": reader.batches, "batch_size": batch_size}
    report["quantize_seconds"] = round(quantize_seconds, 3)
    report["seconds"] = round(time.perf_counter() - start, 3)
    report["size_bytes"] = output.stat().st_size
    report["report_path"] = str(write_report(report, output.with_name(output.name + ".int8.json")))
    return report


def _check_calibrated(path: Path, quantization: dict[str, Any]) -> None:
    """Refuse to reuse ``path``'s quantization unless it was made from this source, set and settings."""
    def core(record: Mapping[str, Any] | None) -> dict[str, Any]:
        record = json.loads(json.dumps(record or {}))  # a deep copy
        settings = record.get("settings", {})
        settings.pop("search", None)
        settings.get("excluded_nodes", {}).pop("sensitive", None)
        return {k: record.get(k) for k in ("quantizer", "quantizer_version", "settings", "source_onnx_sha256",
                                           "calibration_manifest_sha256")}

    if core(read_onnx_info(path).quantization) != core(quantization):
        raise Int8Error(f"{path}: its quantization was made from another source, calibration set or settings; "
                        "it cannot be reused (calibrated=)")


def _modelopt_quantizer(method: str) -> tuple[str, str]:
    """(name, version) of ModelOpt's quantizer; Int8Error when it is missing or lacks ``method``."""
    from ssd_export.int8.modelopt import MODELOPT_METHODS, ModelOptMissing, load_modelopt
    from ssd_export.int8.modelopt import QUANTIZER as MODELOPT

    if method not in MODELOPT_METHODS:
        raise Int8Error(f"--quantizer modelopt has no {method!r} calibration for INT8 (ModelOpt offers "
                        f"{', '.join(MODELOPT_METHODS)}); use --method max or entropy, or --quantizer onnxruntime")
    try:
        _, version = load_modelopt()
    except ModelOptMissing as exc:
        raise Int8Error(str(exc)) from exc
    return MODELOPT, version


def _check_source(path: Path, info: OnnxModelInfo, model: onnx.ModelProto) -> None:
    """Refuse what is not an fp32 network: quantized, end2end, fp16, uint8-nhwc, an old opset."""
    quantized = [n.name for n in model.graph.node if n.op_type in QDQ_OPS]
    if info.variant == "int8" or quantized:
        raise Int8Error(f"refused {path}: it is already quantized (variant {info.variant}, {len(quantized)} Q/DQ "
                        "nodes); quantize the fp32 export it came from")
    if info.variant == "end2end":
        raise Int8Error(f"refused {path}: it is the end2end variant; quantize the network, not the NMS: "
                        "export --variant fp32 and quantize that")
    if info.variant != "fp32":
        raise Int8Error(f"refused {path}: variant {info.variant} (quantize the fp32 export: ssd-export onnx "
                        "--variant fp32; the INT8 model takes float32 NCHW input like it)")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_QDQ_OPSET:
        raise Int8Error(f"refused {path}: opset {opset} < {MIN_QDQ_OPSET}; re-export with --opset {MIN_QDQ_OPSET}")


def _static_batch(model: onnx.ModelProto) -> int | None:
    """The batch of a static-batch graph input, None for a dynamic one."""
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


def _extra_options(method: str, percentile: float) -> dict[str, Any]:
    options: dict[str, Any] = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "CalibStridedMinMax": 1,  # one batch per calibration step: memory bounded for every method
    }
    if method == "percentile":
        options["CalibPercentile"] = percentile
    return options


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence quantize_static's root-logger warnings and the histogram collector's prints."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


class _BatchReader(CalibrationDataReader):
    """Calibration batches for ``quantize_static``, consumed lazily, ``set_range`` steps at a time.

    ``batches`` yields float32 (N, 3, S, S) normalized RGB; a static-batch model gets only full batches
    (``count`` of them).
    """

    def __init__(self, batches: Iterator[np.ndarray], input_name: str, count: int) -> None:
        self._batches = batches
        self._input_name = input_name
        self._count = count
        self._left = count
        self.images = 0
        self.batches = 0

    def __len__(self) -> int:
        return self._count

    def set_range(self, start_index: int, end_index: int) -> None:
        self._left = min(end_index, self._count) - start_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._left <= 0 or self.batches >= self._count:
            return None
        batch = next(self._batches, None)
        if batch is None:
            return None
        self._left -= 1
        self.batches += 1
        self.images += len(batch)
        return {self._input_name: batch}
