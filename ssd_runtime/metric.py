"""Pascal VOC mean average precision, vectorised in NumPy (the one metric of the toolkit).

Rules (``docs/reference.md``, "Inference and evaluation"), per class:

- the detections of the class over the whole set are ranked by score descending (ties: image order,
  then the order inside the image's detections: a stable sort);
- each detection is assigned to the ground-truth box of its class, in its image, with the highest
  IoU (first one on a tie), whether difficult or not; IoU on xyxy boxes without the +1 pixel
  convention (fractions or pixels, as long as detections and ground truth agree; IoU does not change
  under scaling the axes);
- IoU > ``iou_threshold`` (0.5, strict): difficult ground truth -> the detection is ignored (neither
  TP nor FP); otherwise the best-ranked detection assigned to that ground truth is a TP and any later
  one a duplicate FP. IoU <= threshold, or no ground truth of the class in the image -> FP;
- recall counts non-difficult ground truth only.

Because the assignment does not depend on which ground truths are already taken (as in the VOC
devkit and the reference), matching vectorises: IoUs are computed for all (detection, same-image
same-class ground truth) pairs at once, and "first detection per ground truth in rank order" is a
``np.unique``. AP: VOC2007 11-point interpolation (recall thresholds ``np.arange(0, 1.1, 0.1)`` as the
devkit) by default, or all-point (VOC2010+) area under the interpolated curve.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ssd_runtime.detections import Detections

__all__ = ["AP_METHODS", "ClassMatches", "ClassResult", "GroundTruth", "Matches", "VOCResult", "average_precision",
           "class_curve", "map_of_detections", "mean_ap", "voc_map"]

AP_METHODS = ("11point", "allpoint")


@dataclass(frozen=True)
class GroundTruth:
    """Ground truth of one image: boxes float (G, 4) xyxy (same frame as the detections), labels int
    (G,) in 1..C-1, difficult bool (G,)."""

    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray

    @classmethod
    def create(cls, boxes, labels, difficult=None) -> GroundTruth:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if difficult is None:
            difficult = np.zeros(labels.shape, dtype=bool)
        return cls(boxes, labels, np.asarray(difficult, dtype=bool).reshape(-1))


@dataclass
class ClassResult:
    """One class: AP, the precision/recall curve (one point per ranked non-ignored detection), counts."""

    name: str
    ap: float
    num_positives: int  # non-difficult ground truth
    num_detections: int  # detections of the class (ignored ones included)
    num_true_positives: int
    precision: np.ndarray = field(repr=False)
    recall: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)  # score of each curve point

    def to_dict(self, curves: bool = False) -> dict:
        out = {
            "name": self.name,
            "ap": None if np.isnan(self.ap) else float(self.ap),
            "num_positives": self.num_positives,
            "num_detections": self.num_detections,
            "num_true_positives": self.num_true_positives,
        }
        if curves:
            out.update(precision=self.precision.tolist(), recall=self.recall.tolist())
        return out


@dataclass(frozen=True)
class ClassMatches:
    """One class's detections once matched, as the curve reads them: the counted ones (matched-difficult
    ones left out), in rank order.

    image: int64 (K,) index of each detection's image; true_positive: bool (K,); scores: float64 (K,);
    num_detections: the class's detections, ignored ones included.
    """

    image: np.ndarray
    true_positive: np.ndarray
    scores: np.ndarray
    num_detections: int


@dataclass(frozen=True)
class Matches:
    """Everything the AP of each class depends on once detections are matched to ground truth.

    Matching is per image: a detection's TP/FP/ignored flag depends only on its own image's detections
    and ground truth, so a set made of these images again, any image any number of times, has the same
    flags; only the ranking across images and the positives change (:mod:`ssd_runtime.bootstrap`).

    positives: int64 (num_images, C - 1), the non-difficult ground truth of each image and class 1..C-1;
    classes: one :class:`ClassMatches` per class 1..C-1.
    """

    class_names: tuple[str, ...]
    num_images: int
    ap_method: str
    iou_threshold: float
    positives: np.ndarray
    classes: tuple[ClassMatches, ...]


@dataclass
class VOCResult:
    """mAP (a fraction in [0, 1]) over the classes that have non-difficult ground truth.

    Classes without any get AP nan and are left out of the mean.
    """

    map: float
    ap_method: str
    iou_threshold: float
    classes: list[ClassResult]
    #: the matched detections the result was computed from (for resampling); not part of ``to_dict``
    matches: Matches | None = field(default=None, repr=False, compare=False)

    @property
    def ap(self) -> dict[str, float]:
        return {c.name: c.ap for c in self.classes}

    def to_dict(self, curves: bool = False) -> dict:
        return {
            "map": self.map,
            "ap_method": self.ap_method,
            "iou_threshold": self.iou_threshold,
            "classes": [c.to_dict(curves) for c in self.classes],
        }


def average_precision(precision: np.ndarray, recall: np.ndarray, method: str = "11point") -> float:
    """AP of one precision/recall curve (points in rank order): VOC07 11-point or all-point."""
    if method not in AP_METHODS:
        raise ValueError(f"ap method must be one of {AP_METHODS}, got {method!r}")
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    if method == "11point":
        # max precision at recall >= t (0 where none), t = 0, 0.1, ..., 1 as in the VOC07 devkit
        thresholds = np.arange(0.0, 1.1, 0.1)
        if recall.size == 0:
            return 0.0
        # suffix maximum of precision; recall is non-decreasing so recall >= t is a suffix
        suffix_max = np.maximum.accumulate(precision[::-1])[::-1]
        first = np.searchsorted(recall, thresholds, side="left")
        values = np.where(first < recall.size, suffix_max[np.minimum(first, recall.size - 1)], 0.0)
        return float(values.mean())
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    change = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))


def map_of_detections(
    detections: Sequence[Detections],
    ground_truths: Sequence[GroundTruth],
    class_names: Sequence[str],
    *,
    ap_method: str = "11point",
    iou_threshold: float = 0.5,
) -> VOCResult:
    """VOC mAP of per-image detections against per-image ground truth (same image order and frame).

    class_names: all class names with background at index 0 (labels index into it).
    """
    if ap_method not in AP_METHODS:
        raise ValueError(f"ap_method must be one of {AP_METHODS}, got {ap_method!r}")
    if len(detections) != len(ground_truths):
        raise ValueError(
            f"{len(detections)} detection results for {len(ground_truths)} ground-truth images: "
            "pass one of each per image, in the same order"
        )
    num_images = len(detections)
    # all detections, in image order then in-image order (one concatenation per field)
    det_count = np.array([len(d) for d in detections], dtype=np.int64)
    det_image = np.repeat(np.arange(num_images), det_count)
    det_boxes = _concat([d.boxes for d in detections], np.float64).reshape(-1, 4)
    det_labels = _concat([d.labels for d in detections], np.int64)
    det_scores = _concat([d.scores for d in detections], np.float64)
    gt_count = np.array([len(g.labels) for g in ground_truths], dtype=np.int64)
    gt_image = np.repeat(np.arange(num_images), gt_count)
    gt_boxes = _concat([g.boxes for g in ground_truths], np.float64).reshape(-1, 4)
    gt_labels = _concat([g.labels for g in ground_truths], np.int64)
    gt_difficult = _concat([g.difficult for g in ground_truths], bool)

    # rank all detections once by score desc (stable: image order, then in-image order), then
    # group by class keeping rank order (a stable sort on small ints is a radix sort)
    rank = _rank_descending(det_scores)
    small = np.int16 if len(class_names) < 2**15 else np.int64
    det_by_class = np.take(rank, np.argsort(np.take(det_labels, rank).astype(small), kind="stable"))
    det_bounds = np.searchsorted(np.take(det_labels, det_by_class), np.arange(len(class_names) + 1))
    gt_by_class = np.argsort(gt_labels.astype(small), kind="stable")
    gt_bounds = np.searchsorted(np.take(gt_labels, gt_by_class), np.arange(len(class_names) + 1))

    classes, matched = [], []
    for c in range(1, len(class_names)):
        d_idx = det_by_class[det_bounds[c] : det_bounds[c + 1]]
        g_idx = gt_by_class[gt_bounds[c] : gt_bounds[c + 1]]
        class_matches = _match_class(
            np.take(det_image, d_idx), np.take(det_boxes, d_idx, axis=0), np.take(det_scores, d_idx),
            np.take(gt_image, g_idx), np.take(gt_boxes, g_idx, axis=0), np.take(gt_difficult, g_idx),
            num_images, iou_threshold,
        )  # fmt: skip
        matched.append(class_matches)
        num_pos = int(np.count_nonzero(~np.take(gt_difficult, g_idx)))
        precision, recall, ap = class_curve(class_matches.true_positive, num_pos, ap_method)
        classes.append(ClassResult(
            name=str(class_names[c]), ap=ap, num_positives=num_pos, num_detections=class_matches.num_detections,
            num_true_positives=int(np.count_nonzero(class_matches.true_positive)), precision=precision,
            recall=recall, scores=class_matches.scores,
        ))  # fmt: skip
    # (G,) -> (num_images, C - 1): non-difficult ground truth per image and class (column c - 1 is class c)
    positives = np.zeros((num_images, max(len(class_names) - 1, 0)), dtype=np.int64)
    counted = ~gt_difficult & (gt_labels >= 1) & (gt_labels < len(class_names))
    np.add.at(positives, (gt_image[counted], gt_labels[counted] - 1), 1)
    matches = Matches(tuple(str(n) for n in class_names), num_images, ap_method, iou_threshold, positives,
                      tuple(matched))
    return VOCResult(mean_ap(np.array([r.ap for r in classes], dtype=np.float64)), ap_method, iou_threshold,
                     classes, matches)


#: The name docs and README used before the evaluation names said what they take (kept: public API).
voc_map = map_of_detections


def mean_ap(aps: np.ndarray) -> float:
    """mAP of per-class APs (C - 1,) float64: the mean over classes whose AP is not nan (nan when none is)."""
    return float(np.nanmean(aps)) if np.any(~np.isnan(aps)) else float("nan")


def class_curve(true_positive: np.ndarray, num_pos: int, ap_method: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Precision, recall (float64, one point per counted detection in rank order) and AP of one class.

    true_positive: bool (K,) in rank order; num_pos: the class's non-difficult ground truth (AP nan when 0).
    """
    tp_cum = np.cumsum(true_positive)
    fp_cum = np.cumsum(~true_positive)
    recall = tp_cum / num_pos if num_pos else np.full(tp_cum.shape, np.nan)
    precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    ap = average_precision(precision, recall, ap_method) if num_pos else float("nan")
    return precision, recall, ap


def _rank_descending(scores: np.ndarray) -> np.ndarray:
    """Indices sorting ``scores`` descending, ties in index order (= a stable sort), int64.

    For float32-representable scores (the postprocess's) one packed uint64 key (order-preserving
    score bits, index) is sorted by value, several times faster than a stable argsort of floats.
    """
    as32 = scores.astype(np.float32)
    if scores.size >= 2**32 or not np.array_equal(as32, scores):
        return np.argsort(-scores, kind="stable")
    bits = (as32 + np.float32(0.0)).view(np.uint32)  # -0.0 -> +0.0: equal scores, equal keys
    ascending = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
    key = (~ascending).astype(np.uint64) << np.uint64(32) | np.arange(scores.size, dtype=np.uint64)
    return (np.sort(key) & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _concat(parts: list, dtype) -> np.ndarray:
    if not parts:
        return np.zeros((0,), dtype=dtype)
    try:  # the common case: arrays of matching rank (Detections, GroundTruth.create)
        return np.concatenate(parts).astype(dtype, copy=False).reshape(-1)
    except ValueError:
        return np.concatenate([np.asarray(p).reshape(-1) for p in parts]).astype(dtype, copy=False)


def _match_class(
    det_image: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    gt_image: np.ndarray,
    gt_boxes: np.ndarray,
    gt_difficult: np.ndarray,
    num_images: int,
    iou_threshold: float,
) -> ClassMatches:
    """Match one class's detections (in rank order) to its ground truth (in image order)."""
    num_det = det_image.shape[0]
    # ground truth of each image: a contiguous range [gt_start, gt_start + gt_n) (image order)
    gt_n = np.bincount(gt_image, minlength=num_images)
    gt_start = np.cumsum(gt_n) - gt_n
    pairs_per_det = gt_n[det_image]  # (D,)
    # all (detection, same-image ground truth) pairs, detection-major
    pair_det = np.repeat(np.arange(num_det), pairs_per_det)
    pair_first = np.cumsum(pairs_per_det) - pairs_per_det
    pair_gt = np.repeat(gt_start[det_image], pairs_per_det) + (
        np.arange(pair_det.shape[0]) - np.repeat(pair_first, pairs_per_det)
    )
    overlap = _pair_iou(np.take(det_boxes, pair_det, axis=0), np.take(gt_boxes, pair_gt, axis=0))
    # per detection: best IoU and the first ground truth reaching it
    has_pairs = pairs_per_det > 0
    best = np.full(num_det, -1.0)
    best_gt = np.full(num_det, -1, dtype=np.int64)
    if pair_det.size:
        starts = pair_first[has_pairs]
        best[has_pairs] = np.maximum.reduceat(overlap, starts)
        is_best = overlap == best[pair_det]
        first_best = np.minimum.reduceat(np.where(is_best, np.arange(overlap.size), overlap.size), starts)
        best_gt[has_pairs] = pair_gt[first_best]
    hit = best > iou_threshold
    ignored = np.zeros(num_det, dtype=bool)
    ignored[hit] = gt_difficult[best_gt[hit]]  # hits always have a ground truth
    hit_r, ignored_r, gt_r = hit, ignored, best_gt  # already in rank order
    counted = ~ignored_r
    # TP: the first-ranked hit of each non-difficult ground truth
    tp_r = np.zeros(num_det, dtype=bool)
    candidates = np.flatnonzero(hit_r & counted)
    if candidates.size:
        _, first = np.unique(gt_r[candidates], return_index=True)
        tp_r[candidates[first]] = True
    return ClassMatches(image=det_image[counted], true_positive=tp_r[counted], scores=det_scores[counted],
                        num_detections=num_det)


def _pair_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Elementwise IoU of paired xyxy boxes (K, 4) x (K, 4) -> (K,), no +1; empty unions give 0."""
    w = np.clip(np.minimum(boxes1[:, 2], boxes2[:, 2]) - np.maximum(boxes1[:, 0], boxes2[:, 0]), 0, None)
    h = np.clip(np.minimum(boxes1[:, 3], boxes2[:, 3]) - np.maximum(boxes1[:, 1], boxes2[:, 1]), 0, None)
    inter = w * h
    area1 = np.clip(boxes1[:, 2] - boxes1[:, 0], 0, None) * np.clip(boxes1[:, 3] - boxes1[:, 1], 0, None)
    area2 = np.clip(boxes2[:, 2] - boxes2[:, 0], 0, None) * np.clip(boxes2[:, 3] - boxes2[:, 1], 0, None)
    union = area1 + area2 - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
