"""Fixtures of the export tests: the fp32 dynamic-batch export (verified) of the session's trained model,
and an 8-image calibration set of the session's dataset.

The trained model itself is ``runtime_checkpoint`` (tests/conftest.py, one per test session).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fp32_dynamic(runtime_checkpoint, tmp_path_factory: pytest.TempPathFactory):
    """ExportReport of the verified fp32 export of ``runtime_checkpoint`` with a dynamic batch."""
    from ssd_export.onnx_export import export_onnx

    return export_onnx(runtime_checkpoint, tmp_path_factory.mktemp("fp32") / "ssd300.onnx")


@pytest.fixture(scope="session")
def calibration_manifest(voc_root, runtime_onnx, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-image calibration manifest (one batch) of the session's tiny dataset, for the session's model."""
    from ssd_export.calibration import build_manifest, write_manifest
    from ssd_runtime.onnx_model import read_onnx_info

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer than the recommended 500 images
        data = build_manifest(voc_root, split="trainval", images=8, seed=0, spec=read_onnx_info(runtime_onnx).spec)
    return write_manifest(data, tmp_path_factory.mktemp("calibration") / "set.json")


@pytest.fixture(scope="session")
def engine_sources(runtime_checkpoint, runtime_onnx, calibration_manifest, tmp_path_factory) -> dict[str, Path]:
    """ONNX sources of the engine builder's tests, from the session's model: every variant (dynamic batch),
    ``static`` (fp32 at a static batch of 2) and ``int8`` (Q/DQ, 8 calibration images)."""
    from ssd_export.int8 import quantize_int8
    from ssd_export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("engine_sources")
    sources = {"fp32": runtime_onnx}
    for variant in ("fp16", "uint8-nhwc", "end2end"):
        sources[variant] = export_onnx(runtime_checkpoint, folder / f"{variant}.onnx", variant=variant, verify=False).output
    sources["static"] = export_onnx(runtime_checkpoint, folder / "static.onnx", dynamic_batch=False, static_batch=2,
                                    verify=False).output
    sources["int8"] = Path(quantize_int8(runtime_onnx, calibration_manifest, folder / "int8.onnx", parity=False)["output"])
    return sources


@pytest.fixture
def stand_in_gpu(monkeypatch: pytest.MonkeyPatch):
    """The host-memory stand-in of tests/fake_device_memory.py as the build "GPU": ``device_info`` reports it
    (compute capability 9.0), ``set_device`` makes a device current in the stand-in (the fake TensorRT
    builder records which), and the TensorRT backend that checks each engine runs on it."""
    from tests import fake_device_memory
    from tests.fake_device_memory import HostMemory

    memory = HostMemory("9.0")
    monkeypatch.setattr("ssd_runtime.cuda_device.device_info", lambda index=0: memory.info)
    monkeypatch.setattr("ssd_runtime.cuda_device.set_device", fake_device_memory.set_device)
    return memory
