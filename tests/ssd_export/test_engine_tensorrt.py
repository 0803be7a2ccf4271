"""``ssd-export engine`` on real TensorRT and a real GPU (marked tensorrt: skipped where ``import tensorrt``
or CUDA is missing; ``scripts/gpu_check.sh`` runs them wherever TensorRT is installed, unchanged).

Each build runs its parity check through the runtime's TensorRT backend on cuda-python device memory.
The same control flow runs on every machine through the fake tensorrt (tests/ssd_export/test_engine.py).
"""
from __future__ import annotations

import hashlib

import pytest

from ssd_export.tensorrt.engine import EngineOptionError, OnnxParseError, build_engine
from ssd_runtime.engine_sidecar import read_sidecar

pytestmark = pytest.mark.tensorrt


@pytest.fixture(scope="module")
def trt():
    import tensorrt

    return tensorrt


def test_fp32_engine_against_the_checkpoint(trt, engine_sources, runtime_checkpoint, tmp_path):
    from ssd_runtime.cuda_device import device_info

    out = tmp_path / "fp32.engine"
    result = build_engine(engine_sources["fp32"], out, checkpoint=runtime_checkpoint, batch=(1, 4, 8))
    sidecar = read_sidecar(out)
    gpu = device_info(0)
    assert sidecar.tensorrt_version == trt.__version__
    assert (sidecar.gpu_name, sidecar.compute_capability) == (gpu.name, gpu.compute_capability)
    assert sidecar.plan_sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert sidecar.strongly_typed and sidecar.precision == "fp32"
    assert result.parity["passed"], result.parity["failures"]
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    assert runtime.deserialize_cuda_engine(out.read_bytes()) is not None  # a plain plan, as trtexec loads it


@pytest.mark.parametrize(("variant", "precision"), [("fp16", "fp16"), ("int8", "int8"), ("uint8-nhwc", "fp32"),
                                                    ("end2end", "fp32"), ("static", "fp32")])
def test_each_variant_builds_and_passes(trt, engine_sources, tmp_path, variant, precision):
    result = build_engine(engine_sources[variant], tmp_path / f"{variant}.engine", batch=None)
    assert result.sidecar.precision == precision
    assert result.parity["passed"], result.parity["failures"]


def test_fp16_builder_flag_by_feature(trt, engine_sources, tmp_path):
    out = tmp_path / "flag.engine"
    if not hasattr(trt.BuilderFlag, "FP16"):  # TensorRT 11
        with pytest.raises(EngineOptionError, match="no FP16 builder flag"):
            build_engine(engine_sources["fp32"], out, fp16=True)
        return
    result = build_engine(engine_sources["fp32"], out, fp16=True)
    assert result.sidecar.fp16_flag and not result.sidecar.strongly_typed
    assert result.parity["passed"], result.parity["failures"]


def test_timing_cache_and_compatibility_options(trt, engine_sources, tmp_path):
    from ssd_runtime.cuda_device import device_info

    cache = tmp_path / "timing.cache"
    level = "ampere_plus" if float(device_info(0).compute_capability) >= 8.0 else "none"
    first = build_engine(engine_sources["fp32"], tmp_path / "a.engine", timing_cache=cache, version_compatible=True,
                         hardware_compatibility=level, optimization_level=2, workspace=1 << 30)
    assert cache.stat().st_size > 0 and first.parity["passed"]
    second = build_engine(engine_sources["fp32"], tmp_path / "b.engine", timing_cache=cache)
    assert second.parity["passed"]
    assert first.sidecar.version_compatible and first.sidecar.hardware_compatibility == level


def test_parser_errors_name_the_node(trt, engine_sources, tmp_path):
    import onnx

    model = onnx.load(str(engine_sources["fp32"]))
    node = next(n for n in model.graph.node if n.op_type == "Relu")
    node.op_type, node.domain = "NoSuchOp", "com.example"
    model.opset_import.add(domain="com.example", version=1)
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(OnnxParseError) as caught:
        build_engine(bad, tmp_path / "bad.engine")
    assert any(e["name"] == node.name or e["operator"] == "NoSuchOp" for e in caught.value.errors), caught.value.errors
    assert not (tmp_path / "bad.engine").exists()
