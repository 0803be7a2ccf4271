"""Fixtures of the export tests: the fp32 dynamic-batch export (verified) of the session's trained model.

The trained model itself is ``runtime_checkpoint`` (tests/conftest.py, one per test session).
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fp32_dynamic(runtime_checkpoint, tmp_path_factory: pytest.TempPathFactory):
    """ExportReport of the verified fp32 export of ``runtime_checkpoint`` with a dynamic batch."""
    from ssd_export.onnx_export import export_onnx

    return export_onnx(runtime_checkpoint, tmp_path_factory.mktemp("fp32") / "ssd300.onnx")
