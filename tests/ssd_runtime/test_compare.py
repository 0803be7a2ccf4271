"""compare_detections: identical detections up to threshold edges, order swaps and NMS tie flips."""
from __future__ import annotations

import numpy as np

from ssd_runtime.compare import compare_detections
from ssd_runtime.detections import Detections
from ssd_runtime.postprocess import postprocess
from ssd_runtime.spec import PostprocessSettings

from tests.helpers.postprocess_cases import hand_problem


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
