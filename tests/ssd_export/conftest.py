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
