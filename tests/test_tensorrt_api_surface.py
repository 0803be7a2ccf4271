"""Every TensorRT name the toolkit uses exists in the API-surface list of every major it supports.

The list, ``tests/data/tensorrt_api.json``, records for TensorRT 10.3 and 11.1 where NVIDIA's binding
sources define each name (file:line at release/10.3 and release/11.1; derived from
docs/tensorrt-api.md). The names the toolkit uses are found two ways:

- statically: every attribute chain rooted at the ``tensorrt`` module (``trt.X.Y``, ``self._trt.X``) in
  the engine builder (``ssd_export/tensorrt/*.py``) and the runtime backend
  (``ssd_runtime/backends/tensorrt.py``), and the names probed with ``hasattr``/``getattr``;
- dynamically: every name the FAKE tensorrt (tests/helpers/fakes/tensorrt.py) saw touched on its module, enums,
  classes and objects - ``builder.create_network``, ``engine.num_io_tensors``, ... - while the builder
  and backend ran, in this test (a build and a check per major) and in any test before it.

A name must exist in both majors, unless it is only reached behind a feature probe (``hasattr``, or a
probe of the fake that found it absent and went on): then it must exist in at least one.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from tests.helpers.fakes.tensorrt import (
    API_PATH,
    MAJORS,
    USAGE,
    api_names,
    fake_tensorrt,
    load_api,
)

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "ssd_export").glob("tensorrt/*.py")) + [ROOT / "ssd_runtime" / "backends" / "tensorrt.py"]


def _chain(node: ast.AST) -> list[str] | None:
    """``trt.A.B`` / ``self._trt.A.B`` / ``tensorrt.A`` -> ["A", "B"]; None for other expressions."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
        if isinstance(node, ast.Attribute) and node.attr == "_trt" and isinstance(node.value, ast.Name):
            return parts[::-1]
    if isinstance(node, ast.Name) and node.id in ("trt", "tensorrt") and parts:
        return parts[::-1]
    return None


def static_names(paths: list[Path]) -> tuple[set[str], set[str]]:
    """(names used, names probed with hasattr/getattr) in the given files, relative to the module."""
    used, probed = set(), set()
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "parent", None), ast.Attribute):
                chain = _chain(node)
                if chain:
                    used.update(".".join(chain[: i + 1]) for i in range(len(chain)))
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr")
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
                base = _chain(node.args[0]) if isinstance(node.args[0], ast.Attribute) else (
                    [] if isinstance(node.args[0], ast.Name) and node.args[0].id in ("trt", "tensorrt") else None)
                if base is not None:
                    probed.add(".".join([*base, node.args[1].value]))
    return used, probed


def _drive(major: str, sources: dict[str, Path], folder: Path, monkeypatch) -> None:
    """Run the builder and the backend once through the fake ``major`` with every option it supports."""
    import sys

    from ssd_export.tensorrt.engine import EngineBuildError, build_engine
    from ssd_runtime.backends.tensorrt import TensorRTBackend
    from tests.helpers.fakes import device_memory as fake_device_memory
    from tests.helpers.fakes.device_memory import HostMemory
    from tests.helpers.fakes.tensorrt import fake_state

    trt = fake_tensorrt(major)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    memory = HostMemory("9.0")
    monkeypatch.setattr("ssd_runtime.cuda_device.device_info", lambda index=0: memory.info)
    monkeypatch.setattr("ssd_runtime.cuda_device.set_device", fake_device_memory.set_device)
    options = {"backend_options": {"memory": memory}}
    ten = "BuilderFlag.FP16" in api_names(major)
    build_engine(sources["fp32"], folder / f"{major}.engine", fp16=ten, workspace=1 << 28, version_compatible=True,
                 hardware_compatibility="none" if ten else "same_compute_capability", optimization_level=2,
                 timing_cache=folder / f"{major}.cache", **options)
    build_engine(sources["end2end"], folder / f"{major}-e2e.engine", hardware_compatibility="ampere_plus", **options)
    backend = TensorRTBackend(folder / f"{major}-e2e.engine", device="cuda:0", memory=memory, cuda_graph=True)
    backend.infer(backend_batch(backend))
    backend.close()
    fake_state(trt).fail_build = "out_of_memory"
    with pytest.raises(EngineBuildError):
        build_engine(sources["fp32"], folder / "oom.engine", **options)


def backend_batch(backend):
    import numpy as np

    size = backend.spec.input_size
    return np.zeros((2, 3, size, size), np.float32)


def test_the_list_is_well_formed_and_matches_the_documented_differences():
    data = load_api()
    assert set(data["refs"]) == set(MAJORS)
    names = [e["name"] for e in data["names"]]
    assert len(names) == len(set(names))
    where = re.compile(r"^(python/src/(infer|parsers)/\w+\.cpp|python/packaging/bindings_wheel/tensorrt/__init__\.py):\d+$")
    for entry in data["names"]:
        for major in MAJORS:
            assert entry[major] is None or where.match(entry[major]), entry
    only = {m: api_names(m) - api_names(o) for m, o in (("10.3", "11.1"), ("11.1", "10.3"))}
    # docs/tensorrt-api.md, "Names that differ between 10.3 and 11.x"
    assert only["10.3"] == {
        "BuilderFlag.FP16", "BuilderFlag.BF16", "BuilderFlag.INT8", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
        "OnnxParser.supports_model", "ICudaEngine.device_memory_size", "IBuilderConfig.int8_calibrator",
        "Builder.platform_has_fast_fp16", "Builder.platform_has_fast_int8",
    }
    assert only["11.1"] == {"HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY"}
    absent = {e["name"] for e in data["names"] if all(e[m] is None for m in MAJORS)}
    assert absent == {"BuilderFlag.STRONGLY_TYPED"}
    doc = (ROOT / "docs" / "tensorrt-api.md").read_text()
    for sha in (data["refs"][m]["commit"] for m in MAJORS):
        assert sha in doc  # the same refs as the checked page


def test_the_fake_exposes_only_the_list(fake_trt):
    major = fake_trt.__version__.rsplit(".", 1)[0]
    with pytest.raises(AttributeError, match="not in tests/data/tensorrt_api.json"):
        fake_trt.IInt8EntropyCalibrator2  # noqa: B018 - removed in 11, never listed
    builder = fake_trt.Builder(fake_trt.Logger(fake_trt.Logger.WARNING))
    config = builder.create_builder_config()
    with pytest.raises(AttributeError):
        config.max_workspace_size  # noqa: B018 - removed in TensorRT 10
    assert hasattr(builder, "platform_has_fast_fp16") == (major == "10.3")
    assert hasattr(fake_trt.BuilderFlag, "INT8") == (major == "10.3")
    assert hasattr(fake_trt.HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY") == (major == "11.1")
    assert int(fake_trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == {"10.3": 1, "11.1": 0}[major]


@pytest.fixture(scope="module")
def sources(runtime_checkpoint, runtime_onnx, tmp_path_factory) -> dict[str, Path]:
    from ssd_export.onnx.export import export_onnx

    end2end = tmp_path_factory.mktemp("surface") / "end2end.onnx"
    return {"fp32": runtime_onnx, "end2end": export_onnx(runtime_checkpoint, end2end, variant="end2end",
                                                         verify=False).output}


def test_every_name_the_toolkit_uses_is_in_the_list(sources, tmp_path, monkeypatch):
    for major in MAJORS:
        _drive(major, sources, tmp_path, monkeypatch)
    used, probed = static_names(SOURCES)
    assert {"Builder", "OnnxParser", "Runtime", "BuilderFlag.FP16"} <= used  # the scan sees the code
    listed = {e["name"] for e in json.loads(API_PATH.read_text())["names"]}
    recorded = set().union(*(USAGE[m].accessed for m in MAJORS))
    guarded = probed | set().union(*(USAGE[m].missing for m in MAJORS))
    assert {"ICudaEngine.num_io_tensors", "IExecutionContext.execute_async_v3", "IBuilderConfig.set_flag",
            "OnnxParser.parse_from_file"} <= recorded  # the drive reached the builder and the backend
    problems = []
    for name in sorted(used | recorded):
        present = [m for m in MAJORS if name in api_names(m)]
        if name not in listed:
            problems.append(f"{name}: not in tests/data/tensorrt_api.json (check it in NVIDIA's sources, add it)")
        elif name in guarded and not present:
            problems.append(f"{name}: probed, but in no major")
        elif name not in guarded and len(present) < len(MAJORS):
            problems.append(f"{name}: only in {present}, used without a feature probe")
    assert not problems, "\n".join(problems)
