"""NumPy postprocess: hand-worked cases, empty results, strict thresholds, held to the slow reference."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ssd_runtime.boxes import cxcywh_to_xyxy, decode
from ssd_runtime.compare import compare_detections
from ssd_runtime.postprocess import postprocess
from ssd_runtime.spec import PostprocessSettings

from tests.helpers.postprocess_cases import SETTINGS, hand_problem, random_problem, slow_postprocess


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("peaky", [False, True])
def test_identical_to_slow_reference(settings, seed, peaky):
    locs, logits, priors = random_problem(seed, peaky=peaky)
    fast = postprocess(locs, logits, priors, settings)
    slow = slow_postprocess(locs, logits, priors, settings)
    report = compare_detections(fast, slow, settings)
    assert report.identical, report.mismatches
    assert report.edge_differences == 0
    for d in fast:
        assert d.boxes.dtype == np.float32 and d.scores.dtype == np.float32 and d.labels.dtype == np.int64
        assert np.all(d.labels >= 1) and np.all(d.scores > settings.min_score)
        assert len(d) <= settings.top_k


def test_empty_result_shapes():
    locs, logits, priors = random_problem(0)
    logits[..., 0] = 50.0  # background everywhere
    for d in postprocess(locs, logits, priors, PostprocessSettings(0.2, 0.5, 200)):
        assert d.boxes.shape == (0, 4) and d.labels.shape == (0,) and d.scores.shape == (0,)
        assert d.boxes.dtype == np.float32 and d.labels.dtype == np.int64


def test_hand_worked():
    locs, logits, priors = hand_problem()
    (d,) = postprocess(locs, logits, priors, PostprocessSettings(0.15, 0.5, 200))
    # prior 1 (class a, IoU 0.818 with prior 0) is suppressed; class b keeps 2 only (0.1 <= 0.15)
    np.testing.assert_array_equal(d.labels, [1, 2, 1])
    np.testing.assert_allclose(d.scores, [0.8, 0.3, 0.2], atol=1e-6)
    np.testing.assert_allclose(d.boxes[0], [0.4, 0.4, 0.6, 0.6], atol=1e-6)
    np.testing.assert_allclose(d.boxes[1], [0.15, 0.15, 0.25, 0.25], atol=1e-6)
    # IoU threshold above the overlap keeps prior 1; top_k cuts the lowest
    (d,) = postprocess(locs, logits, priors, PostprocessSettings(0.15, 0.85, 3))
    np.testing.assert_array_equal(d.labels, [1, 1, 2])
    np.testing.assert_allclose(d.scores, [0.8, 0.6, 0.3], atol=1e-6)


def test_strict_thresholds():
    locs, logits, priors = hand_problem()
    (d,) = postprocess(locs, logits, priors, PostprocessSettings(0.15, 0.5, 200))
    score = float(d.scores[2])  # exact float32 score of prior 2, class a
    (d2,) = postprocess(locs, logits, priors, PostprocessSettings(score, 0.5, 200))
    assert score not in d2.scores.tolist()  # score == min_score is not kept
    (d3,) = postprocess(locs, logits, priors, PostprocessSettings(float(np.nextafter(score, 0)), 0.5, 200))
    assert score in d3.scores.tolist()
    # IoU exactly at the threshold: not suppressed. Two identical-size boxes offset so IoU = 1/3.
    priors = np.array([[0.5, 0.5, 0.2, 0.2], [0.6, 0.5, 0.2, 0.2]], np.float32)
    logits = np.log(np.array([[[0.2, 0.8], [0.3, 0.7]]], np.float32))
    locs = np.zeros((1, 2, 4), np.float32)
    boxes = cxcywh_to_xyxy(decode(locs[0], priors))  # the boxes the postprocess sees
    w = min(boxes[0, 2], boxes[1, 2]) - max(boxes[0, 0], boxes[1, 0])
    inter = w * (boxes[0, 3] - boxes[0, 1])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    overlap = float(inter / (area[0] + area[1] - inter))
    (d,) = postprocess(locs, logits, priors, PostprocessSettings(0.1, overlap, 10))
    assert len(d) == 2
    below = float(np.nextafter(np.float32(overlap), np.float32(0)))
    (d,) = postprocess(locs, logits, priors, PostprocessSettings(0.1, below, 10))
    assert len(d) == 1


def test_bad_shapes_raise():
    locs, logits, priors = random_problem(0)
    with pytest.raises(ValueError, match="priors"):
        postprocess(locs, logits, priors[:-1], SETTINGS[0])
    with pytest.raises(ValueError, match="locs"):
        postprocess(locs[:, :-1], logits, priors, SETTINGS[0])


def test_importing_runtime_postprocess_and_metric_does_not_import_torch():
    code = (
        "import sys, ssd_runtime, ssd_runtime.postprocess, ssd_runtime.compare, ssd_runtime.metric; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("settings", SETTINGS[:2])
def test_huge_logits_take_the_stable_paths(settings):
    locs, logits, priors = random_problem(4, peaky=True)
    logits = logits * 50  # |logits| in the thousands: max-subtracted softmax, no prefilter
    report = compare_detections(
        postprocess(locs, logits, priors, settings), slow_postprocess(locs, logits, priors, settings), settings
    )
    assert report.identical, report.mismatches
