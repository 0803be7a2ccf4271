"""Detections (the postprocess result type), float32_threshold, and the postprocess module's re-exports."""
from __future__ import annotations

import numpy as np

from ssd_runtime import compare, detections, postprocess
from ssd_runtime.detections import Detections, float32_threshold


def test_float32_threshold():
    for t in [0.01, 0.2, 0.45, 0.5, 1 / 3]:
        f = float32_threshold(t)
        assert float(f) <= t and float(np.nextafter(f, np.float32(1))) > t


def test_empty_and_to_pixels():
    empty = Detections.empty()
    assert len(empty) == 0 and empty.boxes.shape == (0, 4) and empty.boxes.dtype == np.float32
    assert empty.labels.dtype == np.int64 and empty.scores.dtype == np.float32
    d = Detections(np.array([[0.1, 0.2, 0.5, 1.0]], np.float32), np.array([3]), np.array([0.9], np.float32))
    np.testing.assert_allclose(d.to_pixels(200, 100), [[20, 20, 100, 100]], rtol=1e-6)
    assert d.to_pixels(200, 100).dtype == np.float32


def test_postprocess_module_re_exports_the_split_names():
    # existing callers import these from ssd_runtime.postprocess; they are the same objects
    assert postprocess.Detections is detections.Detections
    assert postprocess.float32_threshold is detections.float32_threshold
    assert postprocess.compare_detections is compare.compare_detections
    assert postprocess.DetectionComparison is compare.DetectionComparison
