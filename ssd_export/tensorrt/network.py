"""The TensorRT side of ``ssd-export engine``: ONNX parser, network flags, profile, builder config, build.

Written against the Python API of TensorRT 10.3 (what JetPack 6 ships) and 11.x, using only the names
of ``docs/tensorrt-api.md`` (checked in NVIDIA's binding sources; the list the tests hold every use
to is ``tests/data/tensorrt_api.json``). The two majors are told apart by feature, never by version
string: ``hasattr(trt.BuilderFlag, "FP16")`` (removed in 11, where precision comes from the ONNX
alone) and ``hasattr(trt.HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY")`` (from 10.9). Flag
masks are built from the enums (``1 << int(flag)``): ``STRONGLY_TYPED`` is bit 1 in 10.x and bit 0
in 11.x.

``tensorrt`` is imported inside :func:`import_tensorrt`, never at module import, so the toolkit installs
and imports without it.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssd_export.defaults import DEFAULT_ENGINE_BATCH
from ssd_runtime.errors import ToolkitError
from ssd_runtime.fileio import atomic_write_bytes

#: What to install when ``import tensorrt`` fails.
INSTALL_HINT = (
    "install TensorRT's Python package: on a server `pip install tensorrt` (TensorRT 10.x or 11.x, from "
    "NVIDIA's index); on a Jetson it comes with JetPack 6 (TensorRT 10.3: `sudo apt install python3-libnvinfer`, "
    "for the system Python 3.10)"
)
#: Logged build errors that mean the GPU ran out of memory (TensorRT's allocator reports "Cuda Runtime (out
#: of memory)" or "OutOfMemory"; tactics that do not fit report "insufficient workspace").
_OUT_OF_MEMORY = re.compile(r"out of memory|outofmemory|could not be allocated|insufficient workspace|"
                            r"failed_allocation|cudaErrorMemoryAllocation", re.IGNORECASE)


class EngineBuildError(ToolkitError):
    """An engine could not be built (the message says why and what to do); nothing is left behind."""


class TensorRTUnavailableError(EngineBuildError):
    """No TensorRT Python module, no GPU or driver, or a TensorRT too old for strongly typed networks."""


class EngineOptionError(EngineBuildError, ValueError):
    """An option does not fit the model or the installed TensorRT (e.g. --fp16 on TensorRT 11)."""


class OnnxParseError(EngineBuildError):
    """TensorRT's ONNX parser refused the model; ``errors`` lists each (node, name, operator, code, reason)."""

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.errors = errors


class EngineOutOfMemoryError(EngineBuildError):
    """The GPU ran out of memory while building."""


class EngineBuildFailedError(EngineBuildError):
    """``build_serialized_network`` returned None; ``log`` holds TensorRT's error messages."""

    def __init__(self, message: str, log: list[str]) -> None:
        super().__init__(message)
        self.log = log


class TimingCacheError(EngineBuildError):
    """A timing-cache file TensorRT cannot read, or one made on another GPU or TensorRT version."""


@dataclass(frozen=True)
class TensorRTFeatures:
    """What the installed TensorRT offers, found by feature (attribute present), never by version string.

    fp16_flag: ``BuilderFlag.FP16`` exists (TensorRT 10; removed in 11).
    same_compute_capability: ``HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY`` exists (10.9+, 11).
    """

    version: str
    fp16_flag: bool
    same_compute_capability: bool


@dataclass(frozen=True)
class NetworkSettings:
    """How to build one network (checked by the caller against the model and :class:`TensorRTFeatures`).

    strongly_typed: create the network with ``STRONGLY_TYPED`` (precision from the ONNX); False only for
        the TensorRT 10 FP16 builder flag on a plain FP32 ONNX.
    batch: (min, opt, max) of the one optimisation profile of a dynamic-batch input (None:
        ``DEFAULT_ENGINE_BATCH``); a static input keeps its shape, and a batch other than its own is refused.
    workspace: bytes of the workspace memory pool (None: TensorRT's default, the device's memory).
    hardware_compatibility: "none" | "ampere_plus" | "same_compute_capability".
    optimization_level: builder optimisation level 0-5 (None: TensorRT's default, 3).
    tf32: let FP32 convolutions and matrix products run in TF32 (``BuilderFlag.TF32``, which TensorRT
        enables by default and strong typing does not turn off); False clears it, as trtexec's ``--noTF32``.
    """

    strongly_typed: bool = True
    fp16: bool = False
    tf32: bool = False
    batch: tuple[int, int, int] | None = None
    workspace: int | None = None
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    optimization_level: int | None = None


@dataclass
class NetworkBuild:
    """A built plan and what it is: I/O tensors ({"name", "shape" (-1 dynamic), "dtype"}), profile, timing."""

    plan: bytes
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    profile: dict[str, dict[str, list[int]]]
    seconds: float
    warnings: list[str] = field(default_factory=list)


def import_tensorrt():
    """``import tensorrt``, or :class:`TensorRTUnavailableError` saying what to install."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailableError(f"no TensorRT Python module ({exc}): {INSTALL_HINT}") from exc
    if not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        raise TensorRTUnavailableError(
            f"TensorRT {trt.__version__} has no strongly typed networks; the toolkit builds with TensorRT 10.x or 11.x"
        )
    return trt


def detect_features(trt) -> TensorRTFeatures:
    """The features of the imported ``tensorrt`` module (see :class:`TensorRTFeatures`)."""
    return TensorRTFeatures(
        version=str(trt.__version__),
        fp16_flag=hasattr(trt.BuilderFlag, "FP16"),
        same_compute_capability=hasattr(trt.HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY"),
    )


def _logger(trt):
    """A TensorRT logger that keeps errors and warnings (build failures are explained by them)."""

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            super().__init__()
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
            elif severity == trt.ILogger.Severity.WARNING:
                self.warnings.append(str(msg))

    return CapturingLogger()


def parser_errors(parser) -> list[dict[str, Any]]:
    """Every error of a TensorRT ONNX parser: node index, node name, operator, code, reason."""
    errors = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        errors.append({"node": int(error.node()), "name": str(error.node_name()), "operator": str(error.node_operator()),
                       "code": str(error.code()), "reason": str(error.desc())})
    return errors


def build_plan(trt, onnx_path: Path, settings: NetworkSettings, timing_cache: Path | None = None) -> NetworkBuild:
    """Parse ``onnx_path`` into a TensorRT network, configure the builder, build; return the plan.

    ``timing_cache``: read when the file exists, used by the build, and written back atomically with
    the build's timings combined into whatever the file holds by then (another build may have added
    its own meanwhile). Raises :class:`OnnxParseError`, :class:`EngineOptionError`,
    :class:`TimingCacheError`, :class:`EngineOutOfMemoryError` or :class:`EngineBuildFailedError`.
    """
    logger = _logger(trt)
    try:
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError) as exc:  # pybind11: "factory function returned nullptr" without a GPU
        raise _failed("TensorRT could not create a builder (is a GPU visible?)", logger, exc) from exc
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if settings.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = parser_errors(parser)
        listing = "; ".join(f"node {e['node']} ({e['name'] or 'unnamed'}, operator {e['operator'] or '?'}): "
                            f"{e['code']}: {e['reason']}" for e in errors)
        raise OnnxParseError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {len(errors)} error(s): "
                             f"{listing or 'no error recorded'}", errors)
    inputs = [_tensor(trt, network.get_input(i)) for i in range(network.num_inputs)]
    outputs = [_tensor(trt, network.get_output(i)) for i in range(network.num_outputs)]

    config = builder.create_builder_config()
    profile = _profile(builder, config, inputs, settings.batch)
    if settings.workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace)
    if settings.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if settings.tf32:
        config.set_flag(trt.BuilderFlag.TF32)  # on by default already; set so the plan never depends on that
    else:
        # TF32 is "Enabled by default" (NvInfer.h 10.3: 8317-8320, 11.1: 9973-9976), strongly typed networks
        # included: left on, FP32 convolutions round their inputs to 10-bit mantissas on Ampere and newer
        # (benchmarks/tf32_emulation.py: locs off by 4.1e-3 on the test model with round-to-nearest, 12 to 21
        # TF32 ulps of the outputs' range with truncation; FP32's tolerance allows 32 FP32 ulps, ~1/3000 of that)
        config.clear_flag(trt.BuilderFlag.TF32)
    if settings.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)  # the lean runtime stays in the plan
    if settings.hardware_compatibility != "none":
        config.hardware_compatibility_level = _hardware_level(trt, settings.hardware_compatibility)
    if settings.optimization_level is not None:
        config.builder_optimization_level = settings.optimization_level
    cache_read = _use_timing_cache(config, timing_cache) if timing_cache is not None else None

    start = time.perf_counter()
    try:
        plan = builder.build_serialized_network(network, config)
    except MemoryError as exc:
        raise EngineOutOfMemoryError(f"out of host memory while building {onnx_path}: {exc}") from exc
    seconds = time.perf_counter() - start
    if plan is None:
        if any(_OUT_OF_MEMORY.search(m) for m in logger.errors):
            raise EngineOutOfMemoryError(
                f"the GPU ran out of memory building {onnx_path}: {' | '.join(logger.errors)}; build with a smaller "
                "--batch maximum or --workspace, or free GPU memory (other processes: nvidia-smi); where TensorRT "
                "says 'insufficient workspace', raise --workspace instead (or leave it at TensorRT's default)"
            )
        raise _failed(f"TensorRT {trt.__version__} could not build {onnx_path}", logger)
    if timing_cache is not None:
        _save_timing_cache(config, timing_cache, cache_read)
    return NetworkBuild(bytes(plan), inputs, outputs, profile, seconds, list(logger.warnings))


def _failed(what: str, logger, exc: BaseException | None = None) -> EngineBuildFailedError:
    detail = " | ".join(logger.errors) or (f"{type(exc).__name__}: {exc}" if exc else "TensorRT logged no error")
    return EngineBuildFailedError(f"{what}: {detail}", list(logger.errors))


def _tensor(trt, tensor) -> dict[str, Any]:
    """{"name", "shape" (-1 for a dynamic axis), "dtype" (NumPy name)} of a network I/O tensor."""
    import numpy as np

    return {"name": str(tensor.name), "shape": [int(d) for d in tensor.shape],
            "dtype": np.dtype(trt.nptype(tensor.dtype)).name}


def _profile(builder, config, inputs: list[dict], batch: tuple[int, int, int] | None) -> dict:
    """One optimisation profile over the batch axis of the dynamic inputs; the shapes every input runs at.

    A static input's shape is its min, opt and max (no profile needed); a dynamic one must be dynamic
    in its batch axis only, and gets (batch, *rest) for min, opt and max.
    """
    shapes: dict[str, dict[str, list[int]]] = {}
    profile = None
    batch_dynamic = batch or DEFAULT_ENGINE_BATCH
    for tensor in inputs:
        name, shape = tensor["name"], tensor["shape"]
        if -1 not in shape:
            if batch is not None and set(batch) != {shape[0]}:
                raise EngineOptionError(
                    f"input {name!r} has the static shape {shape}: its batch is {shape[0]}, not --batch "
                    f"{','.join(map(str, batch))}; build with --batch {shape[0]},{shape[0]},{shape[0]} (or none), or "
                    "re-export the ONNX with a dynamic batch (ssd-export onnx without --static-batch)"
                )
            shapes[name] = {"min": shape, "opt": shape, "max": shape}
            continue
        if -1 in shape[1:]:
            raise EngineOptionError(f"input {name!r} has dynamic axes other than the batch ({shape}); the toolkit's "
                                    "exports have a fixed image size: re-export it with ssd-export onnx")
        low, opt, high = ([b, *shape[1:]] for b in batch_dynamic)
        if profile is None:
            profile = builder.create_optimization_profile()
        profile.set_shape(name, low, opt, high)
        shapes[name] = {"min": low, "opt": opt, "max": high}
    if profile is not None:
        config.add_optimization_profile(profile)
    return shapes


def _hardware_level(trt, level: str):
    if level == "ampere_plus":
        return trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if not hasattr(trt.HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY"):
        raise EngineOptionError(
            f"TensorRT {trt.__version__} has no same-compute-capability hardware compatibility (it arrived in 10.9); "
            "use --hardware-compatibility ampere_plus, or build on a newer TensorRT"
        )
    return trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY


def _use_timing_cache(config, path: Path) -> bytes:
    """Load the timing-cache file (empty cache when absent) into ``config``; return the bytes read."""
    if path.exists() and not path.is_file():
        raise TimingCacheError(f"timing cache {path} is not a file")
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is None:
        raise TimingCacheError(f"TensorRT cannot read the timing cache {path} (not a timing cache, or damaged); "
                               "delete it or give another --timing-cache file")
    if not config.set_timing_cache(cache, False):
        raise TimingCacheError(f"the timing cache {path} was made on another GPU or TensorRT version; give a "
                               "--timing-cache file per GPU and TensorRT version")
    return blob


def _save_timing_cache(config, path: Path, read: bytes) -> None:
    """Write the build's timing cache back atomically, combined with what the file holds now."""
    ours = config.get_timing_cache()
    now = path.read_bytes() if path.is_file() else b""
    if now != read:  # another build wrote the file meanwhile: keep its timings too
        merged = config.create_timing_cache(now)
        if merged is not None and merged.combine(ours, False):
            ours = merged
    atomic_write_bytes(path, bytes(ours.serialize()))
