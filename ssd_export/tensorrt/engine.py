"""``ssd-export engine``: build a TensorRT engine from a toolkit ONNX export, check it, write plan + sidecar.

The output is the plain serialized plan (``X.engine``: trtexec, Triton and DeepStream load it
unchanged) and its sidecar ``X.engine.json`` (:mod:`ssd_runtime.engine_sidecar`): TensorRT version,
GPU, compute capability, CUDA version, precision, profile, compatibility flags, I/O tensors, the
model spec from the ONNX metadata, the sha256 of the source ONNX and of the plan, the build time,
the command that rebuilds it and the parity result.

Precision comes from the ONNX (strongly typed networks): the ``fp32``, ``uint8-nhwc`` and ``end2end``
variants build in FP32, the ``fp16`` variant in FP16, the ``int8`` Q/DQ model in INT8. On TensorRT 10
a plain ``fp32`` ONNX may instead be built with the FP16 builder flag (``fp16=True``); TensorRT 11
has no such flag and the option is refused there.

After the build the engine is checked through the TensorRT backend of the runtime
(:func:`ssd_export.parity.check_parity`, tolerance of its precision) against the checkpoint, or
against the source ONNX in ONNX Runtime when no checkpoint is given; an end-to-end engine's
detections are compared with the NumPy reference postprocess (with a checkpoint) or with the source
ONNX's detections. Nothing is written at the output paths until the build and the check are done:
the plan and sidecar are built under temporary names beside them, checked there, then moved into
place (each move atomic). A failed check removes them unless ``keep_failed``.

The TensorRT calls themselves are in :mod:`ssd_export.tensorrt.network`.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssd_export.defaults import DEFAULT_VERIFY_BATCH, OPTIMIZATION_LEVELS
from ssd_export.options import ENGINE_OPTIONS
from ssd_export.tensorrt.network import (
    EngineBuildError,
    EngineBuildFailedError,
    EngineOptionError,
    EngineOutOfMemoryError,
    NetworkBuild,
    NetworkSettings,
    OnnxParseError,
    TensorRTFeatures,
    TensorRTUnavailableError,
    TimingCacheError,
    build_plan,
    detect_features,
    import_tensorrt,
)
from ssd_runtime.engine_sidecar import (
    HARDWARE_COMPATIBILITY,
    SIDECAR_SCHEMA,
    EngineSidecar,
    sidecar_path,
    write_sidecar,
)
from ssd_runtime.fileio import atomic_write_bytes, sha256_file
from ssd_runtime.onnx_model import OnnxModelInfo, read_onnx_info
from ssd_runtime.options import default_of, parse_batch_profile, to_argv
# VARIANT_PRECISION (re-exported): the precision each source variant builds in (strongly typed: the ONNX decides)
from ssd_runtime.variants import VARIANT_PRECISION, VARIANT_TABLE

if TYPE_CHECKING:  # the annotation only: CUDA is looked up when an engine is built
    from ssd_runtime.cuda_device import DeviceInfo

__all__ = [
    "VARIANT_PRECISION",
    "EngineBuild",
    "EngineBuildError",
    "EngineBuildFailedError",
    "EngineOptionError",
    "EngineOutOfMemoryError",
    "EngineParityError",
    "OnnxParseError",
    "TensorRTUnavailableError",
    "TimingCacheError",
    "build_engine",
    "default_tf32",
    "parse_batch",
    "rebuild_command",
    "tensorrt_unavailable_reason",
]



class EngineParityError(EngineBuildError):
    """The built engine does not match its reference; ``report`` is the check, ``kept`` whether files remain."""

    def __init__(self, message: str, report: dict[str, Any], kept: bool) -> None:
        super().__init__(message)
        self.report = report
        self.kept = kept


@dataclass(frozen=True)
class EngineBuild:
    """What :func:`build_engine` made: the plan, its sidecar (with the parity report) and the timings."""

    engine_path: Path
    sidecar_path: Path
    sidecar: EngineSidecar
    parity: dict[str, Any] | None
    seconds: float
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"engine": str(self.engine_path), "sidecar": str(self.sidecar_path), "seconds": self.seconds,
                "warnings": list(self.warnings), **self.sidecar.to_dict()}


def tensorrt_unavailable_reason() -> str | None:
    """None when ``import tensorrt`` works and a CUDA GPU is visible; otherwise one line saying why not."""
    try:
        trt = import_tensorrt()
    except TensorRTUnavailableError as exc:
        return str(exc)
    from ssd_runtime.cuda_device import CudaUnavailableError, device_info

    try:
        device_info(0)
    except CudaUnavailableError as exc:
        return f"TensorRT {trt.__version__} is installed but there is no usable GPU: {exc}"
    return None


def parse_batch(text: str) -> tuple[int, int, int]:
    """``"1,8,16"`` -> (1, 8, 16) (:func:`ssd_runtime.options.parse_batch_profile`), refused as an option error."""
    try:
        return parse_batch_profile(text)
    except ValueError as exc:
        raise EngineOptionError(str(exc)) from None


def default_tf32(precision: str) -> bool:
    """Whether TF32 stays on when ``--tf32``/``--no-tf32`` is not given: off for FP32 engines (whose check
    wants FP32 arithmetic), TensorRT's default (on) for FP16 and INT8 engines, whose tolerances cover it."""
    return precision != "fp32"


def rebuild_command(onnx_path: Path, engine_path: Path, *, checkpoint: Path | None, batch, fp16: bool,
                    workspace: int | None, timing_cache: Path | None, version_compatible: bool,
                    hardware_compatibility: str, optimization_level: int | None, tf32: bool | None = None,
                    precision: str = "fp32", device: int = 0) -> list[str]:
    """The ``ssd-export engine`` argv that builds this engine again (recorded in the sidecar).

    Written from the records the ``ssd-export engine`` parser is built from (:data:`ssd_export.options.ENGINE_OPTIONS`),
    so it parses back to these settings; a setting at :func:`build_engine`'s default is left out, and
    ``tf32`` where it is :func:`default_tf32` of ``precision``.
    """
    settings = dict(onnx_path=onnx_path, engine_path=engine_path, checkpoint=checkpoint,
                    batch=None if batch is None else tuple(batch), fp16=fp16, tf32=tf32, device=device,
                    workspace=workspace, timing_cache=timing_cache, version_compatible=version_compatible,
                    hardware_compatibility=hardware_compatibility, optimization_level=optimization_level)
    defaults = {name: default_of(build_engine, name) for name in settings} | {"tf32": default_tf32(precision)}
    return ["ssd-export", "engine", *to_argv(ENGINE_OPTIONS, settings, defaults)]


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    batch: tuple[int, int, int] | None = None,
    fp16: bool = False,
    workspace: int | None = None,
    timing_cache: str | os.PathLike | None = None,
    version_compatible: bool = False,
    hardware_compatibility: str = "none",
    optimization_level: int | None = None,
    keep_failed: bool = False,
    parity: bool = True,
    device: int = 0,
    backend_options: dict[str, Any] | None = None,
    tf32: bool | None = None,
) -> EngineBuild:
    """Build, check and write a TensorRT engine of a toolkit ONNX export (see the module docstring).

    Args:
        onnx_path: an ONNX written by ``ssd-export onnx`` or ``ssd-export int8`` (spec in its metadata).
        engine_path: the plan to write (``X.engine``); its sidecar is ``X.engine.json``.
        checkpoint: the checkpoint to check the engine against (default: the source ONNX in ONNX Runtime).
        batch: (min, opt, max) of the optimisation profile of a dynamic-batch ONNX (default
            ``defaults.DEFAULT_ENGINE_BATCH``); a static ONNX keeps its batch (another one is refused).
        fp16: TensorRT 10 FP16 builder flag on a plain ``fp32`` ONNX (refused on TensorRT 11 and for
            other variants, whose precision is in the graph).
        workspace: bytes of TensorRT's workspace pool (default: TensorRT's, the device memory).
        timing_cache: a timing-cache file: read if present, written back (combined) after the build.
        version_compatible: build a version-compatible plan (runs on later TensorRT; loads with
            ``engine_host_code_allowed``).
        hardware_compatibility: "none", "ampere_plus" or "same_compute_capability" (TensorRT 10.9+).
        optimization_level: builder optimisation level 0-5 (default: TensorRT's, 3).
        keep_failed: keep the plan and sidecar (parity recorded as failed) when the check fails.
        parity: run the check (False: the sidecar records parity None).
        device: CUDA device index: made current before the builder exists (TensorRT builds on the
            current device), recorded in the sidecar and checked on.
        tf32: let FP32 layers run in TF32 (TensorRT's default). None: off for FP32 engines (the fp32,
            uint8-nhwc and end2end variants), on for FP16 and INT8 ones (:func:`default_tf32`). An FP32
            engine with TF32 is checked against the TF32 tolerance (``parity.TOLERANCES["tf32"]``;
            detections reported, not required identical: judge its accuracy by mAP).
        backend_options: more keyword arguments of the TensorRT backend that runs the check
            (``ssd_runtime.backends.tensorrt.TensorRTBackend``).

    Raises :class:`EngineBuildError` subclasses (TensorRT/GPU missing, option refused, parser errors,
    out of memory, build failed, timing cache unusable, parity failed), ``FileNotFoundError`` and
    ``ssd_runtime.onnx_model.OnnxModelError``; nothing is left at ``engine_path`` on failure.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    checkpoint = None if checkpoint is None else Path(checkpoint)
    timing_cache = None if timing_cache is None else Path(timing_cache)
    _check_options(onnx_path, engine_path, checkpoint, workspace, hardware_compatibility, optimization_level)
    info = read_onnx_info(onnx_path)  # external data checked, spec checked
    trt = import_tensorrt()
    features = detect_features(trt)
    precision = _precision(fp16, features, info, onnx_path)
    tf32_on = default_tf32(precision) if tf32 is None else bool(tf32)
    gpu = _device(device)  # and made current: the builder below builds on the current device
    settings = NetworkSettings(
        strongly_typed=not fp16, fp16=fp16, tf32=tf32_on, batch=batch, workspace=workspace,
        version_compatible=version_compatible, hardware_compatibility=hardware_compatibility,
        optimization_level=optimization_level,
    )
    start = time.perf_counter()
    onnx_sha256 = sha256_file(onnx_path)
    built = build_plan(trt, onnx_path, settings, timing_cache)
    dynamic = [p for t, p in zip(built.inputs, built.profile.values()) if -1 in t["shape"]]
    command = rebuild_command(  # with the profile actually built, so a changed default does not change it
        onnx_path, engine_path, checkpoint=checkpoint, fp16=fp16, workspace=workspace, timing_cache=timing_cache,
        batch=(dynamic[0]["min"][0], dynamic[0]["opt"][0], dynamic[0]["max"][0]) if dynamic else None,
        version_compatible=version_compatible, hardware_compatibility=hardware_compatibility,
        optimization_level=optimization_level, tf32=tf32_on, precision=precision, device=device)
    sidecar = _sidecar(info, built, settings, features.version, gpu, precision, onnx_sha256, command)
    sidecar = _check_and_publish(built.plan, engine_path, sidecar, info, onnx_path, checkpoint, parity=parity,
                                 keep_failed=keep_failed, device=device, backend_options=backend_options)
    return EngineBuild(engine_path, sidecar_path(engine_path), sidecar, sidecar.parity, time.perf_counter() - start,
                       tuple(built.warnings))


def _precision(fp16: bool, features: TensorRTFeatures, info: OnnxModelInfo, onnx_path: Path) -> str:
    """The engine's precision: the source variant's (strongly typed), or fp16 from TensorRT 10's FP16
    builder flag on a plain fp32 ONNX (refused on TensorRT 11 and for other variants)."""
    if fp16 and not features.fp16_flag:
        raise EngineOptionError(
            f"--fp16: TensorRT {features.version} has no FP16 builder flag (removed in TensorRT 11, where precision "
            "comes from the ONNX alone); build the fp16 variant instead: ssd-export onnx --variant fp16 ..."
        )
    if fp16 and info.variant != "fp32":
        raise EngineOptionError(f"--fp16 applies to a plain fp32 ONNX; {onnx_path} is the {info.variant} variant, "
                                "whose precision is in the graph: build it without --fp16")
    return "fp16" if fp16 else VARIANT_PRECISION[info.variant]


def _sidecar(info: OnnxModelInfo, built: NetworkBuild, settings: NetworkSettings, tensorrt_version: str,
             gpu: DeviceInfo, precision: str, onnx_sha256: str, command: list[str]) -> EngineSidecar:
    """The facts of a built plan (``built``, from ``settings`` on ``gpu``), its parity not yet checked."""
    return EngineSidecar(
        schema_version=SIDECAR_SCHEMA,
        tensorrt_version=tensorrt_version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        cuda_version=gpu.cuda_runtime_version,
        precision=precision,
        variant=info.variant,
        fp16_flag=settings.fp16,
        tf32=settings.tf32,
        strongly_typed=settings.strongly_typed,
        profile=built.profile,
        version_compatible=settings.version_compatible,
        hardware_compatibility=settings.hardware_compatibility,
        inputs=built.inputs,
        outputs=built.outputs,
        output_kind=VARIANT_TABLE[info.variant].output_kind,
        spec=info.spec.to_dict(),
        onnx_sha256=onnx_sha256,
        plan_sha256=hashlib.sha256(built.plan).hexdigest(),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(built.seconds, 3),
        build_command=command,
        parity=None,
        end2end=None if info.end2end is None else info.end2end.to_dict(),
    )


def _check_and_publish(plan: bytes, engine_path: Path, sidecar: EngineSidecar, info: OnnxModelInfo, onnx_path: Path,
                       checkpoint: Path | None, *, parity: bool, keep_failed: bool, device: int,
                       backend_options: dict[str, Any] | None) -> EngineSidecar:
    """Check the plan under a temporary name beside ``engine_path`` (when ``parity``), then move it and its
    sidecar into place; returns the sidecar with the check's report (``parity``: None unchecked).

    A failed check raises :class:`EngineParityError`, publishing the pair only when ``keep_failed``."""
    with _Staged(engine_path) as staged:
        staged.write_bytes(plan)
        write_sidecar(staged, sidecar)
        report = None
        if parity:
            from ssd_export.tensorrt.check import check_engine

            report = check_engine(staged, info, checkpoint, device=device, precision=sidecar.precision,
                                  tf32=sidecar.tf32, batch_size=_parity_batch(sidecar.profile, info),
                                  backend_options=backend_options)
            sidecar = replace(sidecar, parity=report)
        if report is not None and not report["passed"]:
            if keep_failed:
                _publish(plan, engine_path, sidecar)
            raise EngineParityError(
                f"the engine built from {onnx_path} fails its parity check ({'; '.join(report['failures'])}); "
                + (f"kept {engine_path} and its sidecar (--keep-failed; the sidecar records the failure)" if keep_failed
                   else "removed it (keep it for inspection with --keep-failed)"),
                report, keep_failed,
            )
        _publish(plan, engine_path, sidecar)
    return sidecar


def _check_options(onnx_path: Path, engine_path: Path, checkpoint: Path | None, workspace: int | None,
                   hardware_compatibility: str, optimization_level: int | None) -> None:
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    if checkpoint is not None and not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    if engine_path.resolve() == onnx_path.resolve() or engine_path.suffix == ".json":
        raise EngineOptionError(f"-o {engine_path}: give the plan's own path (e.g. model.engine)")
    if engine_path.is_dir():
        raise EngineOptionError(f"-o {engine_path} is a folder; give the plan's file name (e.g. model.engine)")
    if hardware_compatibility not in HARDWARE_COMPATIBILITY:
        raise EngineOptionError(f"hardware compatibility {hardware_compatibility!r}: choose one of {HARDWARE_COMPATIBILITY}")
    if optimization_level is not None and optimization_level not in OPTIMIZATION_LEVELS:
        raise EngineOptionError(f"optimization level {optimization_level}: choose one of {list(OPTIMIZATION_LEVELS)}")
    if workspace is not None and workspace <= 0:
        raise EngineOptionError(f"workspace {workspace}: give a positive size")


def _device(index: int):
    """The GPU's facts (name, compute capability, CUDA version), made current for this thread (TensorRT
    builds on the device current when ``trt.Builder`` is created, as trtexec's cudaSetDevice in
    sampleDevice.cpp does before it builds); TensorRTUnavailableError without one."""
    from ssd_runtime.cuda_device import CudaError, CudaUnavailableError, device_info, set_device

    try:
        info = device_info(index)
        set_device(index)
    except (CudaUnavailableError, CudaError) as exc:
        raise TensorRTUnavailableError(f"building a TensorRT engine needs a CUDA GPU (device {index}): {exc}") from exc
    return info


def _parity_batch(profile: dict[str, dict[str, list[int]]], info: OnnxModelInfo) -> int:
    """The check's batch: the default (3) moved into the profile; a static model's own batch."""
    shapes = profile[info.input_name]
    low, high = shapes["min"][0], shapes["max"][0]
    return min(max(DEFAULT_VERIFY_BATCH, low), high)


class _Staged:
    """A temporary plan path beside the output, removed (with its sidecar) on leaving, whatever happened."""

    def __init__(self, engine_path: Path) -> None:
        engine_path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{engine_path.name}.", suffix=engine_path.suffix or ".engine",
                                    dir=engine_path.parent)
        os.close(fd)
        self.path = Path(name)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc_info) -> None:
        self.path.unlink(missing_ok=True)
        sidecar_path(self.path).unlink(missing_ok=True)


def _publish(plan: bytes, engine_path: Path, sidecar: EngineSidecar) -> None:
    """Write the checked plan, then its final sidecar (each atomic: a crash leaves the old file or the new).

    Between the two writes a reader sees the new plan with the old sidecar, whose plan sha256 differs:
    the backend refuses that pair, so no one runs a plan against the wrong facts.
    """
    atomic_write_bytes(engine_path, plan)
    write_sidecar(engine_path, sidecar)
