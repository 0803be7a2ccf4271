"""Fixtures of the export tests: the fp32 dynamic-batch export (verified) of the session's trained model.

The trained model itself is ``runtime_checkpoint``, its calibration set ``calibration_manifest`` and its
export in every variant ``engine_sources`` (tests/conftest.py, one per test session: the runtime's
variant table is checked against the same exports).
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fp32_dynamic(runtime_checkpoint, tmp_path_factory: pytest.TempPathFactory):
    """ExportReport of the verified fp32 export of ``runtime_checkpoint`` with a dynamic batch."""
    from ssd_export.onnx.export import export_onnx

    return export_onnx(runtime_checkpoint, tmp_path_factory.mktemp("fp32") / "ssd300.onnx")


@pytest.fixture
def stand_in_gpu(monkeypatch: pytest.MonkeyPatch):
    """The host-memory stand-in of tests/helpers/fakes/device_memory.py as the build "GPU": ``device_info`` reports it
    (compute capability 9.0), ``set_device`` makes a device current in the stand-in (the fake TensorRT
    builder records which), and the TensorRT backend that checks each engine runs on it."""
    from tests.helpers.fakes import device_memory as fake_device_memory
    from tests.helpers.fakes.device_memory import HostMemory

    memory = HostMemory("9.0")
    monkeypatch.setattr("ssd_runtime.cuda_device.device_info", lambda index=0: memory.info)
    monkeypatch.setattr("ssd_runtime.cuda_device.set_device", fake_device_memory.set_device)
    return memory
