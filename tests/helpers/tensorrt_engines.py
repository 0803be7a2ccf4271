"""Engines for the TensorRT backend's unit tests: FAKE plans (tests/helpers/fakes/tensorrt.py) with real sidecars.

A fake plan is what the fake builder emits - its header (TensorRT version, flags, profile, I/O) and
the ONNX it runs in ONNX Runtime - written here directly from an ONNX export so that these tests
depend on neither the engine builder nor the fake's name-usage records. The sidecar is a real
:class:`~ssd_runtime.engine_sidecar.EngineSidecar`, as ``ssd-export engine`` writes it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import onnx

from ssd_runtime.engine_sidecar import SIDECAR_SCHEMA, EngineSidecar, write_sidecar
from ssd_runtime.onnx_model import read_onnx_info
from tests.helpers.fakes.tensorrt import PLAN_MAGIC, VERSIONS, onnx_dtype_name

STAND_IN_COMPUTE_CAPABILITY = "8.7"  # what tests/fake_device_memory.HostMemory reports by default
_NUMPY_NAMES = {"FLOAT": "float32", "HALF": "float16", "UINT8": "uint8", "INT64": "int64", "INT32": "int32"}


def _io(values) -> list[list]:
    return [[v.name, [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim],
             onnx_dtype_name(v.type.tensor_type.elem_type)] for v in values]


def fake_plan(onnx_path: Path, major: str, *, batch: tuple[int, int, int] = (1, 2, 4), flags: tuple[str, ...] = (),
              tensorrt_version: str | None = None, rename_outputs: dict[str, str] | None = None) -> bytes:
    """The bytes of a fake plan running ``onnx_path``; a dynamic batch gets the profile ``batch`` (min, opt, max)."""
    data = Path(onnx_path).read_bytes()
    model = onnx.load_from_string(data)
    initializers = {i.name for i in model.graph.initializer}
    inputs = _io(v for v in model.graph.input if v.name not in initializers)
    outputs = [[(rename_outputs or {}).get(n, n), s, t] for n, s, t in _io(model.graph.output)]
    profile = {name: [[b, *shape[1:]] for b in batch] for name, shape, _ in inputs if shape[0] == -1}
    header = {
        "tensorrt_version": tensorrt_version or VERSIONS[major], "strongly_typed": True, "flags": sorted(flags),
        "workspace": None, "optimization_level": 3, "hardware_compatibility": "NONE", "profile": profile,
        "inputs": inputs, "outputs": outputs,
    }
    return PLAN_MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + data


def write_engine(onnx_path: Path, engine_path: Path, major: str, *, sidecar: bool = True, plan: bytes | None = None,
                 **sidecar_changes) -> Path:
    """Write a fake plan (or ``plan``) to ``engine_path`` and, unless ``sidecar=False``, its sidecar."""
    plan = plan if plan is not None else fake_plan(onnx_path, major)
    engine_path.write_bytes(plan)
    if sidecar:
        write_sidecar(engine_path, replace(make_sidecar(onnx_path, plan, major), **sidecar_changes))
    return engine_path


def make_sidecar(onnx_path: Path, plan: bytes, major: str) -> EngineSidecar:
    """The sidecar ``ssd-export engine`` would write for this plan (built on the stand-in "GPU")."""
    info = read_onnx_info(onnx_path)
    header = json.loads(plan[len(PLAN_MAGIC):].partition(b"\n")[0])
    tensors = {kind: [{"name": n, "shape": s, "dtype": _NUMPY_NAMES[t]} for n, s, t in header[kind]]
               for kind in ("inputs", "outputs")}
    return EngineSidecar(
        schema_version=SIDECAR_SCHEMA, tensorrt_version=header["tensorrt_version"], gpu_name="stand-in",
        compute_capability=STAND_IN_COMPUTE_CAPABILITY, cuda_version="12.6", precision="fp32", variant=info.variant,
        fp16_flag=False, strongly_typed=True,
        profile={n: dict(zip(("min", "opt", "max"), s)) for n, s in header["profile"].items()},
        version_compatible="VERSION_COMPATIBLE" in header["flags"], hardware_compatibility="none",
        inputs=tensors["inputs"], outputs=tensors["outputs"],
        output_kind="detections" if info.variant == "end2end" else "raw", spec=info.spec.to_dict(),
        onnx_sha256=hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest(),
        plan_sha256=hashlib.sha256(plan).hexdigest(), built_at="2026-11-30T06:00:00+00:00", build_seconds=1.0,
        build_command=["ssd-export", "engine", "--onnx", str(onnx_path), "-o", "model.engine"], parity=None,
        end2end=info.end2end.to_dict() if info.end2end is not None else None,
    )
