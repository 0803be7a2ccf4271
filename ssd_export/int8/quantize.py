"""INT8 by explicit quantization: an fp32 toolkit ONNX -> a Q/DQ ONNX that TensorRT and ONNX Runtime both take.

``quantize_int8("ssd300.onnx", "calibration/set.json", "ssd300_int8.onnx")`` checks its source (an fp32
toolkit export, opset 19 or later) and the calibration set, runs the quantizer named in
:data:`QUANTIZER_TABLE` (the one place a quantizer is chosen: ONNX Runtime's ``quantize_static`` with the
settings TensorRT needs, :mod:`ssd_export.int8.ort`, by default; NVIDIA ModelOpt's,
:mod:`ssd_export.int8.modelopt`) into a temporary file beside the output, and puts its graph through the one
finishing pipeline every quantizer's output goes through (:func:`_finish`, ``docs/export.md``, "INT8"):

- kept in float by every quantizer (``nodes_to_exclude``, found by structure in :mod:`ssd_export.qdq_rules`):
  the conv4_3 L2 norm and its rescale, and the ``Transpose/Reshape/Concat`` tail after the heads; a Q/DQ
  pair on a head conv's output is taken off (:func:`~ssd_export.qdq_rules.strip_qdq`): the heads read INT8
  and write float ``locs`` / ``class_logits``; a search's Convs are put back in float
  (:func:`ssd_export.int8.surgery.keep_float`);
- the graph carries the spec with its provenance (source ONNX and calibration manifest sha256, quantizer,
  version, settings) and variant ``int8`` in its metadata;
- it is checked by :func:`~ssd_export.tensorrt_rules.check_tensorrt_rules` (TensorRT's parser rules and
  :func:`~ssd_export.qdq_rules.check_qdq_rules`; a violation fails the command) and the ONNX checker, and
  moved into place only when every check passed;
- the parity against the fp32 source is reported (``<output>.int8.json``), never judged: INT8 accuracy is
  judged by mAP (``ssd-runtime eval``).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from ssd_export.defaults import DEFAULT_INT8_METHOD, DEFAULT_PERCENTILE, DEFAULT_QUANTIZER, INT8_METHODS, QUANTIZERS
from ssd_export.int8.calibration import DEFAULT_BATCH, CalibrationError, CalibrationSet
from ssd_export.int8.errors import Int8Error
from ssd_export.int8.modelopt import ModelOptQuantizer
from ssd_export.int8.ort import OrtQuantizer
from ssd_export.int8.quantizer import QuantizeJob, Quantizer
from ssd_export.int8.surgery import keep_float
from ssd_export.parity import check_parity, write_report
from ssd_export.qdq_rules import MIN_QDQ_OPSET, QDQ_OPS, FloatRegions, float_regions, strip_qdq
from ssd_export.tensorrt_rules import check_tensorrt_rules
from ssd_runtime.backends.onnxruntime import OrtBackend
from ssd_runtime.fileio import atomic_path, sha256_file
from ssd_runtime.onnx_model import OnnxModelInfo, onnx_metadata, read_onnx_info, write_onnx_metadata
from ssd_runtime.variants import PRECISIONS

__all__ = ["INT8_PARITY", "QUANTIZER_TABLE", "Int8Error", "quantize_int8"]

#: The quantizers by the names of :data:`ssd_export.defaults.QUANTIZERS` (``quantize_int8(quantizer=...)``,
#: ``--quantizer``): the one place a quantizer is chosen. A new one is a module beside
#: :mod:`ssd_export.int8.ort` providing :class:`~ssd_export.int8.quantizer.Quantizer`, and one entry here.
QUANTIZER_TABLE: dict[str, type[Quantizer]] = {"onnxruntime": OrtQuantizer, "modelopt": ModelOptQuantizer}
#: The reported (never judged) parity of the INT8 model with its fp32 source: atol of two INT8 steps of
#: each output's range; detections compared, not required identical (:data:`ssd_runtime.variants.PRECISIONS`).
INT8_PARITY = PRECISIONS["int8"].tolerance


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
            weight: :func:`ssd_export.int8.surgery.keep_float`, the graph the search measured), recorded
            as ``excluded_nodes.sensitive``; the summary is recorded as ``settings.search``.
        quantizer: a name of :data:`QUANTIZER_TABLE`: ``onnxruntime`` (``quantize_static``,
            :mod:`ssd_export.int8.ort`) or ``modelopt`` (NVIDIA ModelOpt's ONNX quantizer, an optional extra
            in its own environment: :mod:`ssd_export.int8.modelopt`; methods ``max`` and ``entropy``); the
            graph rules, checks, metadata and report are the same.
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
    unit = _open_quantizer(quantizer, method, percentile, searching=search is not None)
    if output.resolve() == onnx_path.resolve():
        raise Int8Error(f"{output}: the INT8 model would overwrite its fp32 source; choose another output")
    sensitive = list(search["kept_float"]) if search is not None else []
    info, source, regions = _read_source(onnx_path, [*exclude, *sensitive])
    calib = _load_calibration(calibration, data_root, onnx_path, info)
    static_batch = _static_batch(source)
    if static_batch is not None and batch_size != static_batch:
        raise Int8Error(f"{onnx_path} has a static batch of {static_batch}: pass batch_size={static_batch} "
                        "(--batch-size), or quantize a dynamic-batch export")
    job = QuantizeJob(
        source_path=onnx_path, source=source, input_name=info.input_name, method=method, percentile=percentile,
        batch_size=static_batch or batch_size,
        batches=calib.batches(info.spec, batch_size),  # verifies every image's sha256 first
        num_batches=len(calib) // batch_size if static_batch else -(-len(calib) // batch_size),
        exclude=tuple(exclude), regions=regions,
    )
    float_convs = unit.float_convs(job)  # the quantizer's own float Convs, declared
    settings = unit.settings(job, float_convs)
    if search is not None:
        settings["excluded_nodes"]["sensitive"] = sensitive
        settings["search"] = dict(search)
    quantization, report = _records(unit, settings, onnx_path, info, calib, output)
    with atomic_path(output) as tmp:
        quantize_start = time.perf_counter()
        if calibrated is not None:
            _check_calibrated(Path(calibrated), quantization)
            shutil.copyfile(calibrated, tmp)
            report["calibration_reused_from"] = str(calibrated)
            images, batches = len(calib), job.num_batches
        else:
            images, batches = unit.quantize(job, tmp)
        quantize_seconds = time.perf_counter() - quantize_start
        _finish(tmp, output, job, info, quantization, report, sensitive=sensitive,
                float_nodes=[*exclude, *sensitive, *float_convs])
        if parity:
            _parity(tmp, output, onnx_path, static_batch, report)
    report["calibration"] = {"manifest": str(calib.path), "sha256": calib.sha256, "root": str(calib.root),
                             "images": images, "batches": batches, "batch_size": batch_size}
    report["quantize_seconds"] = round(quantize_seconds, 3)
    report["seconds"] = round(time.perf_counter() - start, 3)
    report["size_bytes"] = output.stat().st_size
    report["report_path"] = str(write_report(report, output.with_name(output.name + ".int8.json")))
    return report


def _open_quantizer(quantizer: str, method: str, percentile: float, *, searching: bool) -> Quantizer:
    """The quantizer of :data:`QUANTIZER_TABLE` for ``method``; :class:`Int8Error` for a bad setting."""
    if method not in INT8_METHODS:
        raise Int8Error(f"unknown calibration method {method!r}; choose one of {', '.join(INT8_METHODS)}")
    if not 0.0 < percentile <= 100.0:
        raise Int8Error(f"percentile must be in (0, 100], got {percentile}")
    if quantizer not in QUANTIZER_TABLE:
        raise Int8Error(f"unknown quantizer {quantizer!r}; choose one of {', '.join(QUANTIZERS)}")
    unit = QUANTIZER_TABLE[quantizer]
    if searching and not unit.searchable:
        raise Int8Error("the sensitive-layer search (search=) works on ONNX Runtime's Q/DQ graph; "
                        "quantize with quantizer='onnxruntime'")
    return unit(method)  # Int8Error when it cannot run here or lacks the method


def _load_calibration(calibration: str | os.PathLike | CalibrationSet, data_root: str | os.PathLike | None,
                      onnx_path: Path, info: OnnxModelInfo) -> CalibrationSet:
    """The calibration set, loaded when a manifest path is given; :class:`CalibrationError` for other classes."""
    calib = calibration if isinstance(calibration, CalibrationSet) else CalibrationSet.load(calibration, data_root=data_root)
    try:
        calib.check_classes(info.spec)
    except CalibrationError as exc:
        raise CalibrationError(f"refused to calibrate {onnx_path}: {exc}") from exc
    return calib


def _records(unit: Quantizer, settings: dict[str, Any], onnx_path: Path, info: OnnxModelInfo, calib: CalibrationSet,
             output: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the quantization record written into the model's metadata, the report's first entries)."""
    quantization = {
        "quantizer": unit.name,
        "quantizer_version": unit.version,
        "settings": settings,
        "source_onnx_sha256": sha256_file(onnx_path),
        "calibration_manifest_sha256": calib.sha256,
        "calibration_manifest": calib.path.name,
    }
    report: dict[str, Any] = {
        "output": str(output),
        "source": {"path": str(onnx_path), "sha256": quantization["source_onnx_sha256"], "variant": info.variant},
        "quantizer": {"name": unit.name, "version": unit.version},
        "settings": settings,
    }
    return quantization, report


def _read_source(onnx_path: Path, float_nodes: Sequence[str]) -> tuple[OnnxModelInfo, onnx.ModelProto, FloatRegions]:
    """(info, graph, float regions) of an fp32 toolkit export whose graph has every node of ``float_nodes``."""
    info = read_onnx_info(onnx_path)  # refuses a non-toolkit ONNX, naming the file
    source = onnx.load(str(onnx_path))
    _check_source(onnx_path, info, source)
    regions = float_regions(source)
    if regions is None:
        raise Int8Error(f"{onnx_path}: the conv4_3 L2 norm or the output heads are not found in the graph; "
                        "quantize an fp32 export of this toolkit (ssd-export onnx --variant fp32)")
    names = {n.name for n in source.graph.node}
    unknown = [n for n in float_nodes if n not in names]
    if unknown:
        raise Int8Error(f"{onnx_path}: --exclude names nodes the graph does not have: {', '.join(unknown)}")
    return info, source, regions


def _finish(tmp: Path, output: Path, job: QuantizeJob, info: OnnxModelInfo, quantization: dict[str, Any],
            report: dict[str, Any], *, sensitive: Sequence[str], float_nodes: Sequence[str]) -> None:
    """The finishing pipeline of every quantizer's graph at ``tmp``: head-output Q/DQ off, the search's Convs
    in float, metadata, TensorRT's rules and the ONNX checker (:class:`Int8Error`), saved back to ``tmp``."""
    model = onnx.load(str(tmp))
    head_outputs = [n.output[0] for n in model.graph.node if n.name in set(job.regions.heads)]
    report["qdq_stripped"] = strip_qdq(model, head_outputs)
    if sensitive:
        model = keep_float(model, job.source, sensitive)
    write_onnx_metadata(model, _metadata(info, quantization))
    model.doc_string = (f"{job.source.doc_string} -> INT8 Q/DQ ({quantization['quantizer']} "
                        f"{quantization['quantizer_version']}, {job.method})")
    # TensorRT's parser rules, the Q/DQ rules (check_qdq_rules) among them
    violations = check_tensorrt_rules(model, float_nodes=list(float_nodes))
    report["rules"] = {"violations": violations}
    if violations:
        raise Int8Error(f"{output}: the Q/DQ graph breaks TensorRT's rules ({'; '.join(violations[:5])}"
                        f"{'; ...' if len(violations) > 5 else ''}); nothing was written")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise Int8Error(f"{output}: the Q/DQ graph fails the ONNX checker: {exc}; nothing was written") from exc
    onnx.save(model, str(tmp))


def _metadata(info: OnnxModelInfo, quantization: dict[str, Any]) -> dict[str, str]:
    """The INT8 model's metadata: its source's spec with the quantization's provenance, variant ``int8``."""
    spec = info.spec.with_provenance(
        onnx_variant="int8",
        source_onnx_sha256=quantization["source_onnx_sha256"],
        calibration_manifest_sha256=quantization["calibration_manifest_sha256"],
        quantizer=quantization["quantizer"],
        quantizer_version=quantization["quantizer_version"],
        quantization_settings=json.dumps(quantization["settings"], sort_keys=True),
    )
    return onnx_metadata(spec, "int8", source_checkpoint_sha256=info.source_checkpoint_sha256, exporter=info.exporter,
                         opset=info.opset, trace_batch=info.trace_batch, quantization=quantization)


def _parity(tmp: Path, output: Path, onnx_path: Path, static_batch: int | None, report: dict[str, Any]) -> None:
    """The informative parity of the INT8 graph at ``tmp`` with its fp32 source, into ``report``."""
    parity_start = time.perf_counter()
    report["parity"] = check_parity(OrtBackend(tmp), OrtBackend(onnx_path), INT8_PARITY,
                                    **({"batch_size": static_batch} if static_batch else {}))
    report["parity"]["backend"]["path"] = str(output)
    report["parity"]["note"] = "informative: INT8 accuracy is judged by mAP (ssd-runtime eval)"
    report["parity_seconds"] = round(time.perf_counter() - parity_start, 3)


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
