"""NumPy postprocess: hand-worked cases, empty results, strict thresholds, a slow reference."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ssd_runtime.boxes import cxcywh_to_xyxy, decode
from ssd_runtime.postprocess import (
    Detections,
    compare_detections,
    float32_threshold,
    postprocess,
)
from ssd_runtime.spec import PostprocessSettings


def random_problem(seed: int, num_images: int = 2, num_priors: int = 300, num_classes: int = 4, peaky=False):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1, 0.9, (num_priors, 2))
    sizes = rng.uniform(0.05, 0.4, (num_priors, 2))
    priors = np.concatenate([centres, sizes], 1).astype(np.float32)
    locs = (rng.standard_normal((num_images, num_priors, 4)) * 0.5).astype(np.float32)
    scale = 12.0 if peaky else 2.0
    logits = (rng.standard_normal((num_images, num_priors, num_classes)) * scale).astype(np.float32)
    if peaky:  # saturated softmax: many exact ties at score 1.0 and 0.0
        logits = np.round(logits / 4) * 40
    return locs, logits, priors


def slow_postprocess(locs, logits, priors, settings: PostprocessSettings) -> list[Detections]:
    """Loop-per-candidate reference with the documented semantics and tie-break."""
    score_thr, iou_thr = float32_threshold(settings.min_score), float32_threshold(settings.max_overlap)
    out = []
    for n in range(logits.shape[0]):
        x = logits[n].astype(np.float32)
        e = np.exp(x - x.max(1, keepdims=True))
        scores = e / e.sum(1, keepdims=True)
        boxes = cxcywh_to_xyxy(decode(locs[n], priors))
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        kept_all = []
        for c in range(1, scores.shape[1]):
            idx = np.flatnonzero(scores[:, c] > score_thr)
            idx = idx[np.argsort(-scores[idx, c], kind="stable")]
            kept: list[int] = []
            for i in idx:
                ok = True
                for j in kept:
                    w = max(np.float32(0), min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
                    h = max(np.float32(0), min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
                    inter = w * h
                    if inter / (area[j] + area[i] - inter) > iou_thr:
                        ok = False
                        break
                if ok:
                    kept.append(int(i))
            kept_all += [(-float(scores[i, c]), c, i) for i in kept]
        kept_all.sort()
        kept_all = kept_all[: settings.top_k]
        out.append(
            Detections(
                np.array([boxes[i] for _, _, i in kept_all], np.float32).reshape(-1, 4),
                np.array([c for _, c, _ in kept_all], np.int64),
                np.array([scores[i, c] for _, c, i in kept_all], np.float32),
            )
        )
    return out


SETTINGS = [
    PostprocessSettings(0.01, 0.45, 200),
    PostprocessSettings(0.2, 0.5, 200),
    PostprocessSettings(0.05, 0.3, 7),
    PostprocessSettings(0.0, 0.6, 1000),
]


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


def hand_problem():
    """Three priors, classes (bg, a, b); decoding with zero offsets returns the priors."""
    priors = np.array([[0.5, 0.5, 0.2, 0.2], [0.52, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]], np.float32)
    locs = np.zeros((1, 3, 4), np.float32)
    probs = np.array([[0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0.5, 0.2, 0.3]], np.float64)
    return locs, np.log(probs)[None].astype(np.float32), priors


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


def test_float32_threshold():
    for t in [0.01, 0.2, 0.45, 0.5, 1 / 3]:
        f = float32_threshold(t)
        assert float(f) <= t and float(np.nextafter(f, np.float32(1))) > t


def test_compare_detections_reports_edges():
    locs, logits, priors = hand_problem()
    s = PostprocessSettings(0.15, 0.5, 200)
    (d,) = postprocess(locs, logits, priors, s)
    same = compare_detections([d], [d], s)
    assert same.identical and same.edge_differences == 0
    # drop the detection whose score sits at the threshold of a setting equal to it: an edge case
    edge_s = PostprocessSettings(float(d.scores[2]), 0.5, 200)
    shorter = Detections(d.boxes[:2], d.labels[:2], d.scores[:2])
    r = compare_detections([d], [shorter], edge_s)
    assert r.identical and r.edge_differences == 1
    # the same drop far from any threshold is a mismatch
    r = compare_detections([d], [shorter], s)
    assert not r.identical and r.mismatches
    moved = Detections(d.boxes + 1e-3, d.labels, d.scores)
    assert not compare_detections([d], [moved], s).identical


def test_compare_detections_admits_an_nms_tie_flip():
    # priors 0 and 1 (class a, IoU 0.82) suppress each other; their scores differ by ~2e-6, as two
    # runtimes' arithmetic can make them. Each side keeps a different one: a tie, not a mismatch.
    locs, logits, priors = hand_problem()
    s = PostprocessSettings(0.15, 0.5, 200)
    tied = logits.copy()
    tied[0, 1] = tied[0, 0]  # prior 1 gets prior 0's distribution
    other = tied.copy()
    other[0, 1, 1] += 1e-5  # prior 1 now just wins (its score rises by about 2e-6)
    (a,) = postprocess(locs, tied, priors, s)
    (b,) = postprocess(locs, other, priors, s)
    assert not np.array_equal(a.boxes, b.boxes)  # different NMS winners
    r = compare_detections([a], [b], s)
    assert r.identical and r.edge_differences == 2, r.mismatches
    # the same two boxes are a mismatch when the scores differ by more than atol ...
    far = Detections(b.boxes, b.labels, b.scores - np.float32(1e-3) * (b.labels == 1))
    assert not compare_detections([a], [far], s).identical
    # ... or when the boxes would not suppress each other
    apart = Detections(b.boxes + np.float32(0.15) * (b.labels == 1)[:, None], b.labels, b.scores)
    assert not compare_detections([a], [apart], s).identical


def test_bad_shapes_raise():
    locs, logits, priors = random_problem(0)
    with pytest.raises(ValueError, match="priors"):
        postprocess(locs, logits, priors[:-1], SETTINGS[0])
    with pytest.raises(ValueError, match="locs"):
        postprocess(locs[:, :-1], logits, priors, SETTINGS[0])


def test_importing_runtime_postprocess_and_metric_does_not_import_torch():
    code = (
        "import sys, ssd_runtime, ssd_runtime.postprocess, ssd_runtime.metric; "
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
