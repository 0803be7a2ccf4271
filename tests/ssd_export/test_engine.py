"""``ssd_export.tensorrt.engine.build_engine`` through the FAKE tensorrt (tests/helpers/fakes/tensorrt.py), both majors.

The fake builds "plans" that embed the ONNX and runs them in ONNX Runtime on host memory (the stand-in
GPU of tests/helpers/fakes/device_memory.py), so the parity check after each build really runs the engine
through the runtime's TensorRT backend: it passes for a good engine and fails for a wrong reference.
What a real TensorRT does with these settings is tested by tests/ssd_export/test_engine_tensorrt.py.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ssd_export.tensorrt.engine import (
    EngineBuildFailedError,
    EngineOptionError,
    EngineOutOfMemoryError,
    EngineParityError,
    OnnxParseError,
    TensorRTUnavailableError,
    build_engine,
    parse_batch,
    tensorrt_unavailable_reason,
)
from ssd_runtime.engine_sidecar import read_sidecar, sidecar_path
from ssd_runtime.fileio import sha256_file
from ssd_runtime.onnx_model import read_onnx_info
from tests.helpers.fakes.tensorrt import fake_state, read_fake_plan


def build(source: Path, out: Path, gpu, **options):
    return build_engine(source, out, backend_options={"memory": gpu}, **options)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_fp32_engine_plan_sidecar_and_parity(fake_trt, stand_in_gpu, engine_sources, tmp_path):
    out = tmp_path / "m.engine"
    result = build(engine_sources["fp32"], out, stand_in_gpu)
    assert files(tmp_path) == ["m.engine", "m.engine.json"]  # nothing staged left behind
    header, embedded = read_fake_plan(out.read_bytes())
    assert embedded == engine_sources["fp32"].read_bytes()  # the plan is the plain serialized network
    assert header["strongly_typed"] and header["flags"] == []  # precision from the ONNX
    assert header["profile"] == {"images": [[1, 3, 300, 300], [8, 3, 300, 300], [16, 3, 300, 300]]}
    sidecar = read_sidecar(out)
    assert sidecar == result.sidecar
    info = read_onnx_info(engine_sources["fp32"])
    assert sidecar.tensorrt_version == fake_trt.__version__
    assert (sidecar.gpu_name, sidecar.compute_capability, sidecar.cuda_version) == (
        stand_in_gpu.info.name, "9.0", stand_in_gpu.info.cuda_runtime_version)
    assert (sidecar.precision, sidecar.variant, sidecar.fp16_flag, sidecar.strongly_typed) == ("fp32", "fp32", False, True)
    assert sidecar.profile == {"images": {"min": [1, 3, 300, 300], "opt": [8, 3, 300, 300], "max": [16, 3, 300, 300]}}
    assert (sidecar.version_compatible, sidecar.hardware_compatibility) == (False, "none")
    assert sidecar.inputs == [{"name": "images", "shape": [-1, 3, 300, 300], "dtype": "float32"}]
    assert sidecar.outputs == [{"name": "locs", "shape": [-1, info.spec.num_priors, 4], "dtype": "float32"},
                               {"name": "class_logits", "shape": [-1, info.spec.num_priors, info.spec.num_classes],
                                "dtype": "float32"}]
    assert sidecar.output_kind == "raw" and sidecar.end2end is None
    assert sidecar.model_spec() == info.spec
    assert sidecar.onnx_sha256 == sha256_file(engine_sources["fp32"])
    assert sidecar.plan_sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert sidecar.build_command == ["ssd-export", "engine", "--model", str(engine_sources["fp32"]), "--output", str(out),
                                     "--batch-profile", "1,8,16"]
    parity = sidecar.parity
    assert parity["passed"] and parity["reference_kind"] == "onnx" and parity["precision"] == "fp32"
    assert parity["batch_size"] == 3 and parity["outputs"]["locs"]["max_abs"] == 0.0  # the same ONNX ran
    assert parity["detections"]["detection"]["identical"]


def test_checked_against_the_checkpoint(fake_trt, stand_in_gpu, engine_sources, runtime_checkpoint, tmp_path):
    result = build(engine_sources["fp32"], tmp_path / "m.engine", stand_in_gpu, checkpoint=runtime_checkpoint,
                   batch=(2, 3, 5))
    assert result.parity["passed"] and result.parity["reference_kind"] == "checkpoint"
    assert result.parity["reference"] == str(runtime_checkpoint)
    assert result.sidecar.profile["images"]["max"] == [5, 3, 300, 300]
    assert result.sidecar.build_command[-4:] == ["--checkpoint", str(runtime_checkpoint), "--batch-profile", "2,3,5"]


def test_wrong_engine_fails_and_is_removed_unless_kept(monkeypatch, stand_in_gpu, wrong_onnx, runtime_checkpoint,
                                                       tmp_path):
    """A parity failure is handled above the TensorRT calls (one major suffices; each check takes ~5 s here)."""
    import sys

    from tests.helpers.fakes.tensorrt import fake_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.1"))
    out = tmp_path / "m.engine"
    out.write_bytes(b"the user's previous engine")
    with pytest.raises(EngineParityError, match="fails its parity check.*removed it.*--keep-failed") as caught:
        build(wrong_onnx, out, stand_in_gpu, checkpoint=runtime_checkpoint)
    assert not caught.value.kept and not caught.value.report["passed"]
    assert any("locs" in f or "class_logits" in f for f in caught.value.report["failures"])
    assert out.read_bytes() == b"the user's previous engine"  # untouched
    assert files(tmp_path) == ["m.engine"]
    with pytest.raises(EngineParityError, match=r"kept .*m\.engine and its sidecar \(--keep-failed") as caught:
        build(wrong_onnx, out, stand_in_gpu, checkpoint=runtime_checkpoint, keep_failed=True)
    assert caught.value.kept
    assert files(tmp_path) == ["m.engine", "m.engine.json"]
    assert read_sidecar(out).parity["passed"] is False


@pytest.fixture(scope="module")
def wrong_onnx(engine_sources, tmp_path_factory) -> Path:
    """The fp32 source with its first convolution's weights scaled by 1.05: a deliberately wrong engine
    (same spec and metadata, other outputs) for a check against the session's checkpoint."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(engine_sources["fp32"]))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(i for i in model.graph.initializer if i.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.05), weight.name))
    path = tmp_path_factory.mktemp("wrong") / "wrong.onnx"
    onnx.save(model, str(path))
    return path


def test_fp16_builder_flag_only_on_tensorrt_10(fake_trt, stand_in_gpu, engine_sources, tmp_path):
    out = tmp_path / "m.engine"
    if fake_state(fake_trt).major == "11.1":
        with pytest.raises(EngineOptionError, match=r"--fp16: TensorRT 11\.1\.0 has no FP16 builder flag.*--variant fp16"):
            build(engine_sources["fp32"], out, stand_in_gpu, fp16=True)
        assert files(tmp_path) == []
        return
    result = build(engine_sources["fp32"], out, stand_in_gpu, fp16=True)
    header, _ = read_fake_plan(out.read_bytes())
    # strong typing forbids the flag; TF32 stays TensorRT's default (on) in an FP16 engine
    assert header["flags"] == ["FP16", "TF32"] and not header["strongly_typed"]
    assert (result.sidecar.precision, result.sidecar.fp16_flag, result.sidecar.strongly_typed) == ("fp16", True, False)
    assert result.parity["passed"] and result.parity["precision"] == "fp16"
    assert result.parity["outputs"]["locs"]["max_abs"] > 0  # the fake rounds through float16, within tolerance
    assert "--fp16" in result.sidecar.build_command


def test_fp16_flag_refused_for_a_variant_with_its_own_precision(fake_trt, stand_in_gpu, engine_sources, tmp_path):
    with pytest.raises(EngineOptionError, match="fp16|FP16"):
        build(engine_sources["fp16"], tmp_path / "m.engine", stand_in_gpu, fp16=True)
    assert files(tmp_path) == []


@pytest.mark.parametrize(("variant", "precision", "dtype"),
                         [("fp16", "fp16", "float32"), ("int8", "int8", "float32"), ("uint8-nhwc", "fp32", "uint8")])
def test_precision_comes_from_the_onnx(fake_trt, stand_in_gpu, engine_sources, tmp_path, variant, precision, dtype):
    out = tmp_path / "m.engine"
    result = build(engine_sources[variant], out, stand_in_gpu)
    header, _ = read_fake_plan(out.read_bytes())
    assert header["strongly_typed"] and header["flags"] == ([] if precision == "fp32" else ["TF32"])
    assert (result.sidecar.precision, result.sidecar.variant, result.sidecar.strongly_typed) == (precision, variant, True)
    assert result.sidecar.tf32 == (precision != "fp32")
    assert result.sidecar.inputs[0]["dtype"] == dtype
    assert result.parity["passed"] and result.parity["precision"] == precision


def test_int8_engine_is_checked_against_its_qdq_onnx_even_with_a_checkpoint(
        fake_trt, stand_in_gpu, engine_sources, runtime_checkpoint, tmp_path):
    # the INT8 tolerance (two INT8 steps) bounds the engine's arithmetic, not the quantization error
    result = build(engine_sources["int8"], tmp_path / "m.engine", stand_in_gpu, checkpoint=runtime_checkpoint)
    assert result.parity["passed"] and result.parity["reference_kind"] == "onnx"
    assert str(engine_sources["int8"]) in result.parity["reference"]


def test_end2end_engine(fake_trt, stand_in_gpu, engine_sources, runtime_checkpoint, tmp_path):
    info = read_onnx_info(engine_sources["end2end"])
    for checkpoint, kind in ((None, "onnx"), (runtime_checkpoint, "checkpoint")):
        result = build(engine_sources["end2end"], tmp_path / f"{kind}.engine", stand_in_gpu, checkpoint=checkpoint)
        sidecar = result.sidecar
        assert (sidecar.output_kind, sidecar.precision) == ("detections", "fp32")
        assert sidecar.end2end == info.end2end.to_dict()
        assert [o["name"] for o in sidecar.outputs] == ["boxes", "scores", "labels", "num_detections"]
        assert result.parity["passed"] and result.parity["reference_kind"] == kind
        assert result.parity["detections"]["end2end"]["identical"]


@pytest.mark.parametrize("variant", ["fp32", "end2end"])
def test_fp32_engines_clear_tf32(fake_trt, stand_in_gpu, engine_sources, runtime_checkpoint, tmp_path, variant):
    """TensorRT enables TF32 by default; left on, the fake truncates the FP32 conv weights to TF32 as TF32
    kernels do, and the engine misses the FP32 tolerance (raw) or its identical detections (end2end)."""
    out = tmp_path / "m.engine"
    result = build(engine_sources[variant], out, stand_in_gpu, checkpoint=runtime_checkpoint)
    header, _ = read_fake_plan(out.read_bytes())
    assert "TF32" not in header["flags"]
    assert result.sidecar.tf32 is False and read_sidecar(out).tf32 is False
    assert result.parity["passed"] and result.parity["precision"] == "fp32"
    assert "--tf32" not in result.sidecar.build_command and "--no-tf32" not in result.sidecar.build_command


def test_tf32_is_an_explicit_choice_with_its_own_tolerance(fake_trt, stand_in_gpu, engine_sources, runtime_checkpoint,
                                                           tmp_path):
    from ssd_export.parity import TOLERANCES

    result = build(engine_sources["fp32"], tmp_path / "tf32.engine", stand_in_gpu, checkpoint=runtime_checkpoint,
                   tf32=True)
    header, _ = read_fake_plan((tmp_path / "tf32.engine").read_bytes())
    assert header["flags"] == ["TF32"] and result.sidecar.tf32 is True and result.sidecar.precision == "fp32"
    parity = result.parity
    assert parity["passed"] and parity["precision"] == "tf32"
    assert parity["tolerance"]["rtol"] == TOLERANCES["tf32"].rtol
    assert parity["outputs"]["locs"]["max_abs"] > 0  # the fake's TF32 weights did change the outputs
    assert "identical_within_tf32_atol" in parity["detections"]["detection"]  # reported, not required
    assert "--tf32" in result.sidecar.build_command
    e2e = build(engine_sources["end2end"], tmp_path / "e2e.engine", stand_in_gpu, tf32=True)
    assert e2e.parity["passed"] and e2e.parity["precision"] == "tf32" and e2e.sidecar.tf32
    assert e2e.parity["detections"]["end2end"]["required_identical"] is False
    off = build(engine_sources["fp16"], tmp_path / "fp16.engine", stand_in_gpu, tf32=False)
    assert "TF32" not in read_fake_plan((tmp_path / "fp16.engine").read_bytes())[0]["flags"]
    assert off.sidecar.tf32 is False and "--no-tf32" in off.sidecar.build_command


def test_the_build_device_is_made_current_before_the_builder(fake_trt, stand_in_gpu, engine_sources, tmp_path):
    """TensorRT builds on the device current when trt.Builder is created (trtexec: cudaSetDevice first)."""
    from tests.helpers.fakes import device_memory as fake_device_memory

    fake_device_memory.set_device(0)  # what a process that never chose a device has
    result = build(engine_sources["fp32"], tmp_path / "m.engine", stand_in_gpu, device=1, parity=False)
    assert fake_state(fake_trt).builder_devices == [1]
    assert result.sidecar.build_command[-2:] == ["--device", "cuda:1"]


def test_static_model_keeps_its_batch(fake_trt, stand_in_gpu, engine_sources, tmp_path):
    result = build(engine_sources["static"], tmp_path / "a.engine", stand_in_gpu)
    assert result.sidecar.profile == {"images": {"min": [2, 3, 300, 300], "opt": [2, 3, 300, 300],
                                                 "max": [2, 3, 300, 300]}}
    assert read_fake_plan((tmp_path / "a.engine").read_bytes())[0]["profile"] == {}  # no profile needed
    assert result.parity["batch_size"] == 2 and "--batch-profile" not in result.sidecar.build_command
    build(engine_sources["static"], tmp_path / "b.engine", stand_in_gpu, batch=(2, 2, 2))
    with pytest.raises(EngineOptionError, match=r"static shape \[2, 3, 300, 300\].*--batch 2,2,2.*dynamic batch"):
        build(engine_sources["static"], tmp_path / "c.engine", stand_in_gpu, batch=(1, 2, 4))
    assert files(tmp_path) == ["a.engine", "a.engine.json", "b.engine", "b.engine.json"]


def test_builder_options_reach_the_config(fake_trt, stand_in_gpu, engine_sources, tmp_path):
    out = tmp_path / "m.engine"
    result = build(engine_sources["fp32"], out, stand_in_gpu, workspace=256 << 20, version_compatible=True,
                   hardware_compatibility="ampere_plus", optimization_level=5)
    header, _ = read_fake_plan(out.read_bytes())
    assert header["workspace"] == 256 << 20 and header["optimization_level"] == 5
    assert header["flags"] == ["VERSION_COMPATIBLE"] and header["hardware_compatibility"] == "AMPERE_PLUS"
    assert (result.sidecar.version_compatible, result.sidecar.hardware_compatibility) == (True, "ampere_plus")
    assert result.parity["passed"]  # the backend allowed the version-compatible plan's host code
    assert result.sidecar.build_command[-7:] == ["--workspace", "256", "--version-compatible",
                                                 "--hardware-compatibility", "ampere_plus", "--optimization-level", "5"]


def test_same_compute_capability_is_detected_by_feature(fake_trt, stand_in_gpu, engine_sources, tmp_path):
    out = tmp_path / "m.engine"
    if fake_state(fake_trt).major == "10.3":
        with pytest.raises(EngineOptionError, match="no same-compute-capability.*10.9.*ampere_plus"):
            build(engine_sources["fp32"], out, stand_in_gpu, hardware_compatibility="same_compute_capability")
        assert files(tmp_path) == []
        return
    build(engine_sources["fp32"], out, stand_in_gpu, hardware_compatibility="same_compute_capability")
    assert read_fake_plan(out.read_bytes())[0]["hardware_compatibility"] == "SAME_COMPUTE_CAPABILITY"


def test_parser_errors_are_all_listed(fake_trt, stand_in_gpu, engine_sources, tmp_path):
    import onnx

    model = onnx.load(str(engine_sources["fp32"]))
    relu, pool = next(n for n in model.graph.node if n.op_type == "Relu"), next(
        n for n in model.graph.node if n.op_type == "MaxPool")
    relu.op_type, pool.op_type = "FancyRelu", "RoiAlignV9"
    source = tmp_path / "bad.onnx"
    onnx.save(model, str(source))
    with pytest.raises(OnnxParseError, match="2 error") as caught:
        build(source, tmp_path / "m.engine", stand_in_gpu)
    errors = caught.value.errors
    nodes = list(model.graph.node)
    assert [(e["node"], e["name"], e["operator"]) for e in errors] == [
        (nodes.index(n), n.name, n.op_type) for n in sorted((relu, pool), key=nodes.index)]
    assert all("UNSUPPORTED_NODE" in e["code"] and "No importer registered" in e["reason"] for e in errors)
    assert relu.name in str(caught.value) and "RoiAlignV9" in str(caught.value)
    assert files(tmp_path) == ["bad.onnx"]


@pytest.mark.parametrize(("failure", "error", "message"), [
    ("out_of_memory", EngineOutOfMemoryError, r"ran out of memory.*out of memory.*smaller --batch maximum or --workspace"),
    ("internal", EngineBuildFailedError, r"could not build .*Could not find any implementation"),
])
def test_build_failures_leave_nothing(fake_trt, stand_in_gpu, engine_sources, tmp_path, failure, error, message):
    fake_state(fake_trt).fail_build = failure
    out = tmp_path / "m.engine"
    out.write_bytes(b"old")
    with pytest.raises(error, match=message):
        build(engine_sources["fp32"], out, stand_in_gpu)
    assert files(tmp_path) == ["m.engine"] and out.read_bytes() == b"old"


def test_no_tensorrt_module(monkeypatch, engine_sources, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    with pytest.raises(TensorRTUnavailableError, match="no TensorRT Python module.*pip install tensorrt.*JetPack 6"):
        build_engine(engine_sources["fp32"], tmp_path / "m.engine")
    assert "JetPack" in tensorrt_unavailable_reason()
    assert files(tmp_path) == []


def test_no_gpu_is_the_real_cuda_error(fake_trt, engine_sources, tmp_path):
    """This machine has cuda-bindings and no driver: device_info's real error reaches the user."""
    from ssd_runtime.cuda_device import CudaUnavailableError, device_info

    try:
        device_info(0)
    except CudaUnavailableError as exc:
        expected = str(exc)
    else:
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(TensorRTUnavailableError, match="needs a CUDA GPU") as caught:
        build_engine(engine_sources["fp32"], tmp_path / "m.engine")
    assert expected in str(caught.value)
    assert "no usable GPU" in tensorrt_unavailable_reason()
    assert files(tmp_path) == []


def test_options_checked_before_anything_runs(fake_trt, stand_in_gpu, engine_sources, tmp_path):
    source = engine_sources["fp32"]
    with pytest.raises(EngineOptionError, match="optimization level 9"):
        build(source, tmp_path / "m.engine", stand_in_gpu, optimization_level=9)
    with pytest.raises(EngineOptionError, match="hardware compatibility 'turing'"):
        build(source, tmp_path / "m.engine", stand_in_gpu, hardware_compatibility="turing")
    with pytest.raises(EngineOptionError, match="-o"):
        build(source, source, stand_in_gpu)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        build(source, tmp_path / "m.engine", stand_in_gpu, checkpoint=tmp_path / "none.pt")
    assert fake_state(fake_trt).builds == [] and files(tmp_path) == []


@pytest.mark.parametrize(("text", "expected"), [("1,8,16", (1, 8, 16)), ("4", (4, 4, 4)), (" 2, 2 ,3", (2, 2, 3))])
def test_parse_batch(text, expected):
    assert parse_batch(text) == expected


@pytest.mark.parametrize("text", ["0,1,2", "4,2,8", "1,2", "a,b,c", "1,2,3,4"])
def test_parse_batch_refuses(text):
    with pytest.raises(EngineOptionError, match="--batch"):
        parse_batch(text)


def test_sidecar_json_is_plain_and_beside_the_plan(fake_trt, stand_in_gpu, engine_sources, tmp_path):
    out = tmp_path / "deploy" / "ssd300.plan"
    build(engine_sources["fp32"], out, stand_in_gpu, parity=False)
    data = json.loads(sidecar_path(out).read_text())
    assert sidecar_path(out).name == "ssd300.plan.json" and data["parity"] is None and data["schema_version"] == 2


def test_build_and_check_without_torch(engine_sources, tmp_path):
    """A Jetson often has no torch: the build and its check against the ONNX (no --checkpoint) import none."""
    import subprocess
    import sys

    script = f"""
import sys
sys.modules["torch"] = None  # `import torch` raises ImportError
import ssd_runtime.cuda_device as cuda_device
from tests.helpers.fakes.device_memory import HostMemory
from tests.helpers.fakes.tensorrt import fake_tensorrt
sys.modules["tensorrt"] = fake_tensorrt("10.3")
memory = HostMemory("8.7")
cuda_device.device_info = lambda index=0: memory.info
from tests.helpers.fakes import device_memory as fake_device_memory
cuda_device.set_device = fake_device_memory.set_device
from ssd_export.tensorrt.engine import build_engine
result = build_engine({str(engine_sources["fp32"])!r}, {str(tmp_path / "m.engine")!r}, backend_options={{"memory": memory}})
assert result.parity["passed"], result.parity["failures"]
print("passed")
"""
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True,
                          cwd=Path(__file__).parents[2],
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "passed", done.stderr[-2000:]
    assert files(tmp_path) == ["m.engine", "m.engine.json"]
