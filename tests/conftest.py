"""Shared test setup: hardware markers skip where the hardware is absent; the session's data and model.

Helpers for building models live in tests/training_helpers.py (import them from there, never from
a conftest).
"""
from __future__ import annotations

import importlib.util

import pytest


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = _cuda_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "tensorrt" in item.keywords and not (has_trt and has_cuda):
            item.add_marker(pytest.mark.skip(reason="needs TensorRT and a CUDA GPU"))


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory: pytest.TempPathFactory):
    """A tiny generated VOC-format dataset (16 trainval + 8 test images)."""
    from ssd_train.synthetic import generate_voc_dataset

    root = tmp_path_factory.mktemp("voc") / "data"
    generate_voc_dataset(root, images=24, test=8)
    return root


@pytest.fixture(scope="session")
def runtime_checkpoint(voc_root, tmp_path_factory: pytest.TempPathFactory):
    """A width-0.125 SSD300 trained for a few Adam steps on the tiny dataset (evaluation transform).

    The session's one briefly trained model (tests/training_helpers.py): barely trained, but with
    peaked scores and real detections above the detection threshold.
    """
    from tests.training_helpers import session_checkpoint

    return session_checkpoint(voc_root, tmp_path_factory.mktemp("runtime") / "small.pt")


@pytest.fixture(scope="session")
def runtime_onnx(runtime_checkpoint):
    """The fp32 ONNX export of ``runtime_checkpoint`` (dynamic batch)."""
    from ssd_export.onnx_export import export_onnx

    out = runtime_checkpoint.with_suffix(".onnx")
    export_onnx(runtime_checkpoint, out, verify=False)
    return out



@pytest.fixture(params=["10.3", "11.1"])
def fake_trt(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """The FAKE ``tensorrt`` module of tests/fake_tensorrt.py (only the names of tests/data/tensorrt_api.json
    for that major) installed as ``sys.modules["tensorrt"]``, once per major (10.3, 11.1)."""
    import sys

    from tests.fake_tensorrt import fake_tensorrt

    module = fake_tensorrt(request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module
