"""The sidecar of a TensorRT engine: ``X.engine.json`` beside the plain serialized plan ``X.engine``.

A TensorRT plan is executable code for one TensorRT version and one GPU architecture, and it cannot
carry the toolkit's metadata (trtexec, Triton and DeepStream must load the plan unchanged). So
``ssd-export engine`` writes what a runtime needs into this JSON file: the model spec, what the plan
was built with (TensorRT version, GPU, compute capability, CUDA version, precision, profile,
compatibility flags), its inputs and outputs, the sha256 of the source ONNX and of the plan, how it
was built (the argv that rebuilds it) and the result of the parity check run after the build.

The writer is the engine builder (``ssd_export.tensorrt.engine``); the reader is the TensorRT backend, which
calls :func:`read_sidecar` and :func:`check_sidecar` before it deserializes a plan - the same
writer/reader pair as :mod:`ssd_runtime.onnx_model` for ONNX metadata. The file is stamped and checked
by :data:`ssd_runtime.formats.ENGINE_SIDECAR` (``format``, ``schema_version``); sidecars written before the
stamp spelled the version ``schema`` and still load.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ssd_runtime.errors import FormatError
from ssd_runtime.fileio import atomic_write_bytes
from ssd_runtime.formats import ENGINE_SIDECAR, VERSION_KEY
from ssd_runtime.onnx_model import End2EndConfig
from ssd_runtime.spec import ModelSpec
from ssd_runtime.variants import OUTPUT_KINDS, VARIANT_TABLE

#: The schema written. 2 added ``tf32``; schema 1 sidecars stay readable (see :data:`SCHEMA_DEFAULTS`).
SIDECAR_SCHEMA = ENGINE_SIDECAR.version
#: Schema -> the values of the keys that schema lacks. Schema 1 builds never touched BuilderFlag.TF32,
#: which TensorRT enables by default (NvInfer.h 10.3: 8317-8320), so their plans were built with TF32 on.
SCHEMA_DEFAULTS: dict[int, dict[str, object]] = {1: {"tf32": True}, 2: {}}
#: What an engine computes in: its source variant's precision, or fp16 for an fp32 source built with
#: the FP16 flag - the variants' precisions (``ssd_runtime.variants``).
PRECISIONS = tuple(dict.fromkeys(v.precision for v in VARIANT_TABLE.values()))
#: The source ONNX variants an engine can be built from: every variant (``ssd_runtime.variants``).
SOURCE_VARIANTS = tuple(VARIANT_TABLE)
#: TensorRT's HardwareCompatibilityLevel members, lower case (``trt.HardwareCompatibilityLevel.NONE``...).
HARDWARE_COMPATIBILITY = ("none", "ampere_plus", "same_compute_capability")
#: (build major, runtime major) pairs where a version-compatible plan runs across majors (TensorRT 11.4
#: support matrix, "Engine Portability": "TensorRT 10 version-compatible engines can run with a TensorRT 11
#: runtime, and TensorRT 8 ... with a TensorRT 10 runtime. No other combination across major versions").
VERSION_COMPATIBLE_ACROSS_MAJORS = {(8, 10), (10, 11)}
#: Ampere is compute capability 8.0: an ``ampere_plus`` plan runs on it and on every later GPU.
AMPERE_COMPUTE_CAPABILITY = (8, 0)


class EngineSidecarError(ValueError):
    """An engine's sidecar JSON is missing, malformed or of an unknown schema."""


class SidecarFormatError(EngineSidecarError, FormatError):
    """A sidecar of another format, or of a schema this toolkit does not read (both errors at once: the
    sidecar's, which the TensorRT backend's callers catch, and the one of every versioned file)."""


class EngineMismatchError(EngineSidecarError):
    """A plan does not match its sidecar, or was built for another TensorRT version or GPU."""


@dataclass(frozen=True)
class EngineSidecar:
    """What ``ssd-export engine`` records about a plan (the JSON keys are the field names, after the
    ``format`` stamp).

    schema_version: the file's schema (:data:`SIDECAR_SCHEMA` when written by this toolkit; a schema 1
        sidecar reads as 1 with the keys it lacks filled in from :data:`SCHEMA_DEFAULTS`).

    compute_capability: "major.minor" of the build GPU, e.g. "9.0" (H100/H200), "8.7" (Jetson Orin).
    precision: the precision the engine computes in ("fp32" | "fp16" | "int8").
    variant: the variant of the source ONNX (fp32, fp16, int8, uint8-nhwc, end2end).
    fp16_flag: the TensorRT 10 builder flag FP16 was set (a plain FP32 ONNX built in FP16).
    tf32: ``BuilderFlag.TF32`` was left on: FP32 layers may compute in TF32 (a required key from schema 2;
        a schema 1 sidecar reads as True, what those builds did).
    strongly_typed: the network was created strongly typed (precision taken from the ONNX).
    profile: input name -> {"min": [...], "opt": [...], "max": [...]} of the one optimisation profile.
    inputs, outputs: [{"name", "shape" (-1 for a dynamic axis), "dtype" (NumPy name)}], engine order.
    output_kind: "raw" (locs, class_logits) or "detections" (an end2end engine's four outputs).
    spec: the model spec as plain data (``ModelSpec.to_dict``), as the ONNX metadata holds it.
    built_at: ISO 8601 UTC; build_seconds: the TensorRT build alone.
    build_command: the argv that rebuilds this engine (``ssd-export engine ...``).
    parity: the report of the check run after the build (None when it was not run).
    end2end: output_kind "detections" only - the source ONNX's baked postprocess
        (``End2EndConfig.to_dict()``: settings and max_candidates); None for raw engines. Optional key.
    """

    schema_version: int
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    cuda_version: str
    precision: str
    variant: str
    fp16_flag: bool
    strongly_typed: bool
    profile: dict
    version_compatible: bool
    hardware_compatibility: str
    inputs: list
    outputs: list
    output_kind: str
    spec: dict
    onnx_sha256: str
    plan_sha256: str
    built_at: str
    build_seconds: float
    build_command: list
    parity: dict | None
    end2end: dict | None = None
    tf32: bool = False

    def to_dict(self) -> dict:
        """Plain JSON-able data: the ``format`` stamp, then the field names (its own ``schema_version``)."""
        return {**ENGINE_SIDECAR.header(), **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "engine sidecar") -> EngineSidecar:
        """Rebuild a sidecar, checking the format and schema, every field's type and the enumerated values."""
        if not isinstance(data, dict):
            raise EngineSidecarError(f"{source}: expected a JSON object, got {type(data).__name__}")
        schema = ENGINE_SIDECAR.check(data, source, error=SidecarFormatError)  # old files: "schema", no name
        data = {**SCHEMA_DEFAULTS[schema], **data, VERSION_KEY: schema}
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data and n != "end2end"]
        if missing:
            raise EngineSidecarError(f"{source}: missing keys {missing}")
        sidecar = cls(**{n: data[n] for n in names if n in data})
        sidecar._check(source)
        return sidecar

    def _check(self, source: str) -> None:
        types = {
            "tensorrt_version": str, "gpu_name": str, "compute_capability": str, "cuda_version": str,
            "precision": str, "variant": str, "fp16_flag": bool, "tf32": bool, "strongly_typed": bool,
            "profile": dict, "version_compatible": bool, "hardware_compatibility": str,
            "inputs": list, "outputs": list, "output_kind": str, "spec": dict, "onnx_sha256": str,
            "plan_sha256": str, "built_at": str, "build_seconds": (int, float), "build_command": list,
        }  # fmt: skip
        for name, expected in types.items():
            value = getattr(self, name)
            if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
                raise EngineSidecarError(f"{source}: {name!r} has the wrong type ({type(value).__name__})")
        if self.parity is not None and not isinstance(self.parity, dict):
            raise EngineSidecarError(f"{source}: 'parity' must be an object or null")
        for name, allowed in (
            ("precision", PRECISIONS),
            ("variant", SOURCE_VARIANTS),
            ("hardware_compatibility", HARDWARE_COMPATIBILITY),
            ("output_kind", OUTPUT_KINDS),
        ):
            if getattr(self, name) not in allowed:
                raise EngineSidecarError(f"{source}: {name} {getattr(self, name)!r} is not one of {allowed}")
        _version_tuple(self.compute_capability, "compute_capability", source)
        for name in ("onnx_sha256", "plan_sha256"):
            value = getattr(self, name)
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise EngineSidecarError(f"{source}: {name} is not a sha256 hex digest: {value!r}")
        for kind in ("inputs", "outputs"):
            for tensor in getattr(self, kind):
                if not (isinstance(tensor, dict) and {"name", "shape", "dtype"} <= tensor.keys()):
                    raise EngineSidecarError(f"{source}: each of {kind} needs name, shape and dtype: {tensor!r}")
        for name, shapes in self.profile.items():
            if not (isinstance(shapes, dict) and {"min", "opt", "max"} <= shapes.keys()):
                raise EngineSidecarError(f"{source}: profile of {name!r} needs min, opt and max")
        if (self.output_kind == "detections") != (self.end2end is not None):
            raise EngineSidecarError(f"{source}: 'end2end' (the baked postprocess) is required for output_kind "
                                     f"'detections' and only there (output_kind {self.output_kind!r})")
        if self.end2end is not None:
            try:
                End2EndConfig.from_dict(self.end2end)
            except (KeyError, TypeError, ValueError) as exc:
                raise EngineSidecarError(f"{source}: malformed 'end2end' {self.end2end!r} ({exc})") from exc
        if not all(isinstance(arg, str) for arg in self.build_command):
            raise EngineSidecarError(f"{source}: build_command must be a list of strings")

    def model_spec(self) -> ModelSpec:
        """The model spec, checked as every loader checks it (schema version, prior hash)."""
        return ModelSpec.from_dict(self.spec, source="engine sidecar (spec)")

    def end2end_config(self) -> End2EndConfig | None:
        """The postprocess baked into an end-to-end engine (None for raw engines)."""
        return None if self.end2end is None else End2EndConfig.from_dict(self.end2end)

    @property
    def rebuild_command(self) -> str:
        """The shell command that rebuilds this engine."""
        return shlex.join(self.build_command)


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``X.engine`` -> ``X.engine.json`` (the full name plus ``.json``, so X.plan -> X.plan.json)."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def write_sidecar(engine_path: str | os.PathLike, sidecar: EngineSidecar) -> Path:
    """Write the sidecar of ``engine_path`` atomically; returns its path."""
    path = sidecar_path(engine_path)
    text = json.dumps(sidecar.to_dict(), indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def read_sidecar(engine_path: str | os.PathLike) -> EngineSidecar:
    """Read and check the sidecar of ``engine_path``; raises :class:`EngineSidecarError`."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineSidecarError(
            f"{engine_path}: no sidecar {path}. A TensorRT plan needs the sidecar `ssd-export engine` "
            "writes beside it (the model spec and what the plan was built for); rebuild it with "
            "`ssd-export engine --model MODEL.onnx -o ENGINE`, or, for a plan you trust, load it with "
            "trust_plan=True and a model spec (a plan is executable code)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineSidecarError(f"{path}: not a readable JSON sidecar ({type(exc).__name__}: {exc})") from exc
    return EngineSidecar.from_dict(data, source=str(path))


def check_sidecar(
    sidecar: EngineSidecar,
    plan: bytes,
    *,
    tensorrt_version: str,
    compute_capability: str,
    engine_path: str | os.PathLike,
) -> None:
    """Refuse a plan that is not the one the sidecar describes or was built for another TensorRT or GPU.

    - the plan's sha256 must equal ``plan_sha256``;
    - the running TensorRT version must equal the build's; a version-compatible plan runs on the
      build's version or a later one of the same major, and a 10.x one also on 11.x (TensorRT's
      "version forward compatibility", :data:`VERSION_COMPATIBLE_ACROSS_MAJORS`);
    - the GPU's compute capability must equal the build's; an ``ampere_plus`` plan runs on any
      compute capability >= 8.0 (``same_compute_capability`` still needs the same one).

    Raises :class:`EngineMismatchError` saying what the plan was built with, what is running, and
    the command that rebuilds it.
    """
    rebuild = f"rebuild it on this machine with: {sidecar.rebuild_command}"
    actual = hashlib.sha256(plan).hexdigest()
    if actual != sidecar.plan_sha256:
        raise EngineMismatchError(
            f"{engine_path}: the plan's sha256 is {actual[:12]}..., its sidecar records "
            f"{sidecar.plan_sha256[:12]}...: the plan was changed or the sidecar belongs to another "
            f"engine; {rebuild}"
        )
    if not _tensorrt_compatible(sidecar, tensorrt_version):
        how = " (version-compatible: runs on that version or later of the same major, 10.x also on 11.x)" if sidecar.version_compatible else ""
        raise EngineMismatchError(
            f"{engine_path}: built with TensorRT {sidecar.tensorrt_version}{how}, running TensorRT "
            f"{tensorrt_version}; a plan only loads in the TensorRT it was built for; {rebuild}"
        )
    if not _hardware_compatible(sidecar, compute_capability, engine_path):
        how = {
            "none": "",
            "ampere_plus": " (hardware-compatible ampere_plus: compute capability 8.0 or later)",
            "same_compute_capability": " (hardware-compatible: the same compute capability)",
        }[sidecar.hardware_compatibility]
        raise EngineMismatchError(
            f"{engine_path}: built on {sidecar.gpu_name} (compute capability "
            f"{sidecar.compute_capability}){how}, running on compute capability {compute_capability}; "
            f"{rebuild}"
        )


def _tensorrt_compatible(sidecar: EngineSidecar, running: str) -> bool:
    if running == sidecar.tensorrt_version:
        return True
    if not sidecar.version_compatible:
        return False
    built = _version_tuple(sidecar.tensorrt_version, "tensorrt_version", "engine sidecar")
    now = _version_tuple(running, "running TensorRT version", "TensorRT")
    return now >= built and (now[0] == built[0] or (built[0], now[0]) in VERSION_COMPATIBLE_ACROSS_MAJORS)


def _hardware_compatible(sidecar: EngineSidecar, running: str, engine_path) -> bool:
    now = _version_tuple(running, "running compute capability", str(engine_path))
    if sidecar.hardware_compatibility == "ampere_plus":
        return now >= AMPERE_COMPUTE_CAPABILITY
    return now == _version_tuple(sidecar.compute_capability, "compute_capability", "engine sidecar")


def _version_tuple(text: str, what: str, source: str) -> tuple[int, ...]:
    """"10.3.0.26" -> (10, 3, 0, 26), "10.0.0b6" -> (10, 0, 0); no leading number is an EngineSidecarError."""
    match = re.match(r"\d+(\.\d+)*", text)
    if match is None:
        raise EngineSidecarError(f"{source}: {what} {text!r} is not a dotted version like 9.0")
    return tuple(int(part) for part in match.group(0).split("."))


__all__ = [
    "HARDWARE_COMPATIBILITY",
    "OUTPUT_KINDS",
    "PRECISIONS",
    "SCHEMA_DEFAULTS",
    "SIDECAR_SCHEMA",
    "SOURCE_VARIANTS",
    "EngineMismatchError",
    "EngineSidecar",
    "EngineSidecarError",
    "SidecarFormatError",
    "check_sidecar",
    "read_sidecar",
    "sidecar_path",
    "write_sidecar",
]
