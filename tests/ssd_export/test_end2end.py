"""The end-to-end ONNX graph (NMS inside): padded detections identical to the reference postprocess."""
from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from ssd_export.onnx.export import export_onnx
from ssd_export.parity import verification_images
from ssd_runtime.preprocess import normalize
from ssd_runtime.spec import EVALUATION_SETTINGS
from ssd_train.checkpoint import load_model


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("settings_name", ["detection", "evaluation"])
def test_end2end_matches_reference_postprocess(runtime_checkpoint: Path, tmp_path: Path, settings_name: str):
    _, spec = load_model(runtime_checkpoint)
    settings = spec.detection if settings_name == "detection" else EVALUATION_SETTINGS
    out = tmp_path / "e2e.onnx"
    report = export_onnx(runtime_checkpoint, out, variant="end2end", end2end_settings=settings,
                         max_candidates=10**6).verification
    comparison = report["detections"]["end2end"]
    print(f"end2end at {settings_name} settings:", {k: v for k, v in comparison.items() if k != "mismatches"})
    assert comparison["identical"], comparison
    assert comparison["num_detections_a"] > 0
    session = _session(out)
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels", "num_detections"]
    boxes, scores, labels, num = session.run(None, {"images": normalize(verification_images(1, seed=3), spec)})
    assert boxes.shape == (1, 200, 4) and scores.shape == labels.shape == (1, 200) and num.shape == (1,)
    assert (labels[0, num[0]:] == -1).all() and (scores[0, num[0]:] == 0).all()
