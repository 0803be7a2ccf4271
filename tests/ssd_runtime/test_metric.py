"""VOC mAP: hand-worked cases, difficult handling, and a slow loop reference on random data."""
from __future__ import annotations

import numpy as np
import pytest

from ssd_runtime.metric import GroundTruth, average_precision, map_of_detections
from ssd_runtime.postprocess import Detections
from tests.helpers.metric_cases import NAMES, dets, random_set


def slow_voc_map(detections, ground_truths, num_classes, method):
    """Straightforward per-detection loop, as in the reference tutorial / VOC devkit."""
    aps = []
    for c in range(1, num_classes):
        items = []
        for i, d in enumerate(detections):
            for k in range(len(d)):
                if d.labels[k] == c:
                    items.append((-float(d.scores[k]), i, k))
        items.sort()  # score desc, then image, then in-image order (= stable sort)
        npos = sum(int(np.sum((g.labels == c) & ~g.difficult)) for g in ground_truths)
        taken = [np.zeros(len(g.labels), bool) for g in ground_truths]
        tp, fp = [], []
        for _, i, k in items:
            g = ground_truths[i]
            box = detections[i].boxes[k].astype(np.float64)
            best, best_j = -1.0, -1
            for j in range(len(g.labels)):
                if g.labels[j] != c:
                    continue
                gb = g.boxes[j]
                iw = max(0.0, min(box[2], gb[2]) - max(box[0], gb[0]))
                ih = max(0.0, min(box[3], gb[3]) - max(box[1], gb[1]))
                inter = iw * ih
                union = (box[2] - box[0]) * (box[3] - box[1]) + (gb[2] - gb[0]) * (gb[3] - gb[1]) - inter
                o = inter / union if union > 0 else 0.0
                if o > best:
                    best, best_j = o, j
            if best > 0.5:
                if g.difficult[best_j]:
                    continue
                if not taken[i][best_j]:
                    taken[i][best_j] = True
                    tp.append(1); fp.append(0)  # noqa: E702
                else:
                    tp.append(0); fp.append(1)  # noqa: E702
            else:
                tp.append(0); fp.append(1)  # noqa: E702
        if npos == 0:
            aps.append(np.nan)
            continue
        tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
        rec = tp_c / npos
        prec = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
        if method == "11point":
            ap = 0.0
            for t in np.arange(0.0, 1.1, 0.1):
                ap += (np.max(prec[rec >= t]) if np.sum(rec >= t) > 0 else 0) / 11.0
        else:
            mrec = np.concatenate(([0.0], rec, [1.0]))
            mpre = np.concatenate(([0.0], prec, [0.0]))
            for i in range(mpre.size - 1, 0, -1):
                mpre[i - 1] = max(mpre[i - 1], mpre[i])
            i = np.where(mrec[1:] != mrec[:-1])[0]
            ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
        aps.append(ap)
    return aps


@pytest.mark.parametrize("method", ["11point", "allpoint"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_slow_reference(method, seed):
    rng = np.random.default_rng(seed)
    d, g = random_set(rng, 60, len(NAMES))
    result = map_of_detections(d, g, NAMES, ap_method=method)
    expected = slow_voc_map(d, g, len(NAMES), method)
    np.testing.assert_allclose([c.ap for c in result.classes], expected, rtol=0, atol=1e-12)
    assert result.map == pytest.approx(np.nanmean(expected), abs=1e-12)
    assert result.ap_method == method


def test_hand_worked_difficult_and_duplicates():
    gt = [GroundTruth.create([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], [False, True])]
    d = [
        dets(
            [[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [50, 50, 60, 60]],
            [1, 1, 1, 1],
            [0.9, 0.8, 0.7, 0.6],
        )
    ]
    r = map_of_detections(d, gt, NAMES[:2], ap_method="allpoint")
    cls = r.classes[0]
    # ranked: TP, duplicate FP, ignored (difficult), FP -> 3 curve points
    assert cls.num_positives == 1 and cls.num_true_positives == 1 and cls.num_detections == 4
    np.testing.assert_allclose(cls.precision, [1.0, 0.5, 1 / 3])
    np.testing.assert_allclose(cls.recall, [1.0, 1.0, 1.0])
    assert cls.ap == pytest.approx(1.0)
    assert r.map == pytest.approx(1.0)


def test_iou_threshold_is_strict():
    # IoU exactly 0.5: not a match
    gt = [GroundTruth.create([[0, 0, 2, 1]], [1])]
    d = [dets([[0, 0, 1, 1]], [1], [0.9])]
    assert map_of_detections(d, gt, NAMES[:2]).classes[0].num_true_positives == 0
    d = [dets([[0, 0, 1.001, 1]], [1], [0.9])]
    assert map_of_detections(d, gt, NAMES[:2]).classes[0].num_true_positives == 1


def test_11point_vs_allpoint_known_curve():
    precision = np.array([1.0, 0.5, 2 / 3])
    recall = np.array([0.5, 0.5, 1.0])
    # all-point: 0.5 * 1 + 0.5 * 2/3
    assert average_precision(precision, recall, "allpoint") == pytest.approx(0.5 + 1 / 3)
    # 11-point: t <= 0.5 -> 1 (6 points), t > 0.5 -> 2/3 (5 points)
    assert average_precision(precision, recall, "11point") == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_empty_inputs_and_class_without_ground_truth():
    gt = [GroundTruth.create(np.zeros((0, 4)), [])]
    r = map_of_detections([Detections.empty()], gt, NAMES)
    assert all(np.isnan(c.ap) for c in r.classes) and np.isnan(r.map)
    gt = [GroundTruth.create([[0, 0, 1, 1]], [2])]
    r = map_of_detections([dets([[0, 0, 1, 1]], [1], [0.5])], gt, NAMES)
    assert np.isnan(r.ap["a"]) and r.ap["b"] == 0.0 and r.map == 0.0
    assert r.to_dict()["classes"][0]["ap"] is None


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same order"):
        map_of_detections([Detections.empty()], [], NAMES)


def test_rank_descending_is_a_stable_sort():
    from ssd_runtime.metric import _rank_descending

    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=1000), 1).astype(np.float32).astype(np.float64)  # ties, negatives
    np.testing.assert_array_equal(_rank_descending(scores), np.argsort(-scores, kind="stable"))
    scores = rng.random(100)  # not float32-exact: fallback
    np.testing.assert_array_equal(_rank_descending(scores), np.argsort(-scores, kind="stable"))
