"""Shared test setup: hardware markers skip where the hardware is absent; the session's data and model,
its calibration set and its ONNX exports in every variant.

Helpers for building models live in tests/helpers/training.py (import them from there, never from
a conftest).
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

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

    The session's one briefly trained model (tests/helpers/training.py): barely trained, but with
    peaked scores and real detections above the detection threshold.
    """
    from tests.helpers.training import session_checkpoint

    return session_checkpoint(voc_root, tmp_path_factory.mktemp("runtime") / "small.pt")


@pytest.fixture(scope="session")
def runtime_onnx(runtime_checkpoint):
    """The fp32 ONNX export of ``runtime_checkpoint`` (dynamic batch)."""
    from ssd_export.onnx.export import export_onnx

    out = runtime_checkpoint.with_suffix(".onnx")
    export_onnx(runtime_checkpoint, out, verify=False)
    return out



@pytest.fixture(scope="session")
def calibration_manifest(voc_root, runtime_onnx, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-image calibration manifest (one batch) of the session's tiny dataset, for the session's model."""
    from ssd_export.int8.calibration import build_manifest, write_manifest
    from ssd_runtime.onnx_model import read_onnx_info

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer than the recommended 500 images
        data = build_manifest(voc_root, split="trainval", images=8, seed=0, spec=read_onnx_info(runtime_onnx).spec)
    return write_manifest(data, tmp_path_factory.mktemp("calibration") / "set.json")


@pytest.fixture(scope="session")
def engine_sources(runtime_checkpoint, runtime_onnx, calibration_manifest, tmp_path_factory) -> dict[str, Path]:
    """ONNX sources of the engine builder's tests, from the session's model: every variant (dynamic batch),
    ``static`` (fp32 at a static batch of 2) and ``int8`` (Q/DQ, 8 calibration images)."""
    from ssd_export.int8.quantize import quantize_int8
    from ssd_export.onnx.export import export_onnx

    folder = tmp_path_factory.mktemp("engine_sources")
    sources = {"fp32": runtime_onnx}
    for variant in ("fp16", "uint8-nhwc", "end2end"):
        sources[variant] = export_onnx(runtime_checkpoint, folder / f"{variant}.onnx", variant=variant, verify=False).output
    sources["static"] = export_onnx(runtime_checkpoint, folder / "static.onnx", dynamic_batch=False, static_batch=2,
                                    verify=False).output
    sources["int8"] = Path(quantize_int8(runtime_onnx, calibration_manifest, folder / "int8.onnx", parity=False)["output"])
    return sources


@pytest.fixture(params=["10.3", "11.1"])
def fake_trt(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """The FAKE ``tensorrt`` module of tests/helpers/fakes/tensorrt.py (only the names of tests/data/tensorrt_api.json
    for that major) installed as ``sys.modules["tensorrt"]``, once per major (10.3, 11.1)."""
    import sys

    from tests.helpers.fakes.tensorrt import fake_tensorrt

    module = fake_tensorrt(request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module
