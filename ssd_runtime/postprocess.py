"""SSD postprocess in NumPy: raw network outputs -> per-image detections (no torch).

Semantics (``docs/reference.md``, "Inference and evaluation"), identical in the torch twin
``ssd_runtime.postprocess_torch``:

1. softmax over the classes of each prior (float32);
2. decode the offsets against the priors (variances 0.1 / 0.2) to fractional xyxy boxes. As in the
   reference, boxes are **not clipped** to the image, neither before NMS nor in the output;
3. for each non-background class keep the priors whose score is strictly greater than ``min_score``;
4. greedy NMS per class: a candidate is suppressed when its IoU with a kept, higher-ranked candidate
   of the same class is strictly greater than ``max_overlap`` (IoU as torchvision computes it:
   ``inter / (area_i + area_j - inter)`` on float32 boxes, no +1 pixel convention);
5. the ``top_k`` kept detections over all classes, sorted.

Order and tie-break: score descending, then class index ascending, then prior index ascending. The
same order ranks candidates inside the greedy NMS of a class. Thresholds are compared exactly as
real numbers (``x > t`` on float32 ``x``), which is what torchvision's NMS does with its float64
threshold; every implementation reads the one float32 value of each threshold that the settings carry
(:attr:`~ssd_runtime.spec.PostprocessSettings.min_score_float32`, ``max_overlap_float32``: see
:func:`float32_threshold`).

The NumPy implementation exploits the structure of the problem: a candidate's fate depends only on
higher-ranked candidates of its class, so candidates are processed in the global output order, in
blocks, and processing stops as soon as ``top_k`` detections are kept. Inside a block only pairs of
the same class are formed, and the greedy NMS is resolved exactly by a fixed-point iteration (the
greedy result is the unique fixed point of ``keep[i] = not any(keep[j] and iou[j, i] > t, j < i)``).
Its cost grows with top_k times the detections kept per class: it is built for top_k in the hundreds
(the reference settings); at top_k in the thousands torchvision's C++ NMS is faster.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ssd_runtime.boxes import VARIANCES, cxcywh_to_xyxy, decode
# the result type and the comparison live in their own modules; re-exported here for existing callers
from ssd_runtime.compare import DetectionComparison, compare_detections
from ssd_runtime.detections import Detections, float32_threshold
from ssd_runtime.spec import PostprocessSettings

__all__ = [
    "DetectionComparison",
    "Detections",
    "compare_detections",
    "float32_threshold",
    "postprocess",
]


def postprocess(
    locs: np.ndarray,
    class_logits: np.ndarray,
    priors: np.ndarray,
    settings: PostprocessSettings,
    variances: tuple[float, float] = VARIANCES,
) -> list[Detections]:
    """Raw SSD outputs -> one :class:`Detections` per image (see the module docstring).

    locs: (N, P, 4) box offsets; class_logits: (N, P, C) logits with background at index 0;
    priors: (P, 4) fractional cxcywh. Computed in float32. An image with nothing above ``min_score``
    gets empty arrays of shapes (0, 4), (0,), (0,).
    """
    locs = np.asarray(locs, dtype=np.float32)
    class_logits = np.asarray(class_logits, dtype=np.float32)
    priors = np.asarray(priors, dtype=np.float32)
    _check_shapes(locs.shape, class_logits.shape, priors.shape)
    if settings.top_k <= 0:
        return [Detections.empty() for _ in range(class_logits.shape[0])]
    score_thr, iou_thr = settings.min_score_float32, settings.max_overlap_float32
    results = []
    for n in range(class_logits.shape[0]):
        cand_scores, cand_cls0, cand_prior = _candidates(class_logits[n], score_thr)
        results.append(
            _nms_top_k(cand_scores, cand_cls0, cand_prior, locs[n], priors, variances, iou_thr, settings.top_k)
        )
    return results


def _check_shapes(locs_shape: tuple, logits_shape: tuple, priors_shape: tuple) -> None:
    if len(logits_shape) != 3 or logits_shape[2] < 2:
        raise ValueError(f"class_logits must be (N, P, C) with C >= 2, got shape {logits_shape}")
    n, p, _ = logits_shape
    if tuple(locs_shape) != (n, p, 4):
        raise ValueError(f"locs must be (N, P, 4) = {(n, p, 4)} to match class_logits, got {locs_shape}")
    if tuple(priors_shape) != (p, 4):
        raise ValueError(f"priors must be (P, 4) = {(p, 4)} fractional cxcywh, got {priors_shape}")


#: Below this min_score nearly every prior has a candidate: score all priors instead of prefiltering.
_PREFILTER_MIN_SCORE = 0.05
#: Largest block of candidates resolved at once by the NumPy NMS (ties may make a block larger).
_MAX_BLOCK = 1024
#: |logit| bound under which exp(x) cannot overflow or underflow to a zero sum in float32.
_SAFE_LOGIT = 80.0


def _flatnonzero(mask: np.ndarray) -> np.ndarray:
    """np.flatnonzero without its Python-level wrapper (these helpers run per image and block)."""
    return mask.ravel().nonzero()[0]


def _candidates(logits: np.ndarray, score_thr: np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's (P, C) logits -> candidates with softmax score > score_thr, in (prior, class) order.

    Returns (scores float32, cls0 = class - 1, prior), each (M,). Scores are exp(x - max) / sum as
    torch computes them; when all |logits| < 80 the max is not subtracted (same value up to float32
    rounding, within the admissible differences). At high thresholds (detection settings) only the
    priors that can have a candidate are scored: score_c > t needs exp(x_c) / (exp(x_0) + exp(x_c))
    > t, i.e. x_c - x_0 > log(t / (1 - t)) (checked with a margin).
    """
    num_priors, num_classes = logits.shape
    t = float(score_thr)
    # the prefilter's float32 rounding of x_0 + log(t / (1 - t)) stays far below its 1e-3 margin
    # while |x_0| < 1000 (real logits are tens at most); otherwise score every prior
    if _PREFILTER_MIN_SCORE <= t < 1.0 and float(np.abs(logits[:, 0]).max(initial=0.0)) < 1000.0:
        logit_t = np.float32(np.log(t / (1.0 - t)) - 1e-3)
        # (P, C): necessary condition, against the background logit (contiguous compare over all
        # columns is faster than over the strided foreground view; column 0 is then cleared)
        passed = logits > logits[:, :1] + logit_t
        passed[:, 0] = False
        prior, cls = np.divmod(_flatnonzero(passed), num_classes)
        cls0 = cls - 1
        row_flag = np.zeros(num_priors, dtype=bool)
        row_flag[prior] = True
        rows = _flatnonzero(row_flag)
        local = (np.cumsum(row_flag) - 1)[prior]  # prior -> row in `rows`
        x = logits.take(rows, axis=0)  # (R, C)
        x -= x.max(axis=1, keepdims=True)
        np.exp(x, out=x)
        # take on flat indices: much faster than 2-D fancy indexing
        scores = x.ravel().take(local * num_classes + cls) / x.sum(axis=1).take(local)
        keep = scores > score_thr
        return scores[keep], cls0[keep], prior[keep]
    if float(np.abs(logits).max(initial=0.0)) < _SAFE_LOGIT:
        exp = np.exp(logits)  # (P, C)
    else:
        exp = logits - logits.max(axis=1, keepdims=True)
        np.exp(exp, out=exp)
    total = exp @ np.ones(num_classes, dtype=np.float32)  # (P,) row sums
    # slightly loose prefilter on exp_c > t * sum, then the exact test on the divided scores
    loose = total * np.float32(t * (1.0 - 1e-5))
    maybe = _flatnonzero(exp[:, 1:] > loose[:, None])
    prior, cls0 = np.divmod(maybe, num_classes - 1)
    # flat index in (P, C): maybe = prior * (C-1) + cls0 -> prior * C + cls0 + 1
    scores = exp.ravel().take(maybe + prior + 1) / total.take(prior)
    keep = scores > score_thr
    return scores[keep], cls0[keep], prior[keep]


def _score_order_chunks(
    scores: np.ndarray, cls: np.ndarray, prior: np.ndarray, first: int
) -> Iterator[np.ndarray]:
    """Indices of candidates in output order (score desc, class asc, prior asc), in chunks >= ``first``.

    Only the chunks a caller consumes are sorted: each chunk takes every remaining candidate scoring
    at least the chunk's partition value, so ties never straddle a chunk boundary.
    """
    remaining = np.arange(scores.shape[0])
    size = first
    while remaining.size:
        rem_scores = scores[remaining]
        if remaining.size > size:
            kth = np.partition(rem_scores, remaining.size - size)[remaining.size - size]
            take = rem_scores >= kth
            chunk = remaining[take]
            remaining = remaining[~take]
        else:
            chunk = remaining
            remaining = remaining[:0]
        # lexsort: last key is the primary one
        yield chunk[np.lexsort((prior[chunk], cls[chunk], -scores[chunk]))]
        size = min(2 * size, _MAX_BLOCK)


def _nms_top_k(
    cand_scores: np.ndarray,
    cand_cls0: np.ndarray,
    cand_prior: np.ndarray,
    locs: np.ndarray,
    priors: np.ndarray,
    variances: tuple[float, float],
    iou_thr: np.float32,
    top_k: int,
) -> Detections:
    """Greedy per-class NMS of one image's candidates, processed in output order until top_k kept.

    cand_*: (M,) candidates in any order; locs (P, 4); priors (P, 4) cxcywh.
    """
    if cand_scores.size == 0:
        return Detections.empty()
    # kept detections so far, in output order (at most top_k)
    kept_boxes = np.zeros((0, 4), np.float32)
    kept_area = np.zeros((0,), np.float32)
    kept_cls = np.zeros((0,), np.int64)
    kept_scores = np.zeros((0,), np.float32)
    # blocks bound the pair lists' memory: pairs <= block * (kept of its class + block)
    first = min(max(64, 2 * top_k), _MAX_BLOCK)
    for block in _score_order_chunks(cand_scores, cand_cls0, cand_prior, first):
        prior = cand_prior.take(block)
        # (B, 4) fractional cxcywh -> xyxy, float32
        boxes = cxcywh_to_xyxy(
            decode(locs.take(prior, axis=0), priors.take(prior, axis=0), variances)
        )
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        cls = cand_cls0.take(block)
        keep = _greedy_block(kept_boxes, kept_area, kept_cls, boxes, area, cls, iou_thr)
        take = _flatnonzero(keep)[: top_k - kept_cls.shape[0]]
        kept_boxes = np.concatenate([kept_boxes, boxes.take(take, axis=0)])
        kept_area = np.concatenate([kept_area, area.take(take)])
        kept_cls = np.concatenate([kept_cls, cls.take(take)])
        kept_scores = np.concatenate([kept_scores, cand_scores.take(block.take(take))])
        if kept_cls.shape[0] >= top_k:
            break
    return Detections(kept_boxes, kept_cls + 1, kept_scores)


def _greedy_block(
    kept_boxes: np.ndarray,
    kept_area: np.ndarray,
    kept_cls: np.ndarray,
    boxes: np.ndarray,
    area: np.ndarray,
    cls: np.ndarray,
    iou_thr: np.float32,
) -> np.ndarray:
    """Exact greedy NMS of a block (B,) ranked after the already kept detections (K,) -> keep (B,) bool.

    Positions 0..K-1 are the kept detections (fixed), K..K+B-1 the block in output order. Pairs
    (p, q), p < q, of the same class with q in the block are formed by grouping positions by class.
    """
    num_kept, num_block = kept_cls.shape[0], cls.shape[0]
    all_cls = np.concatenate([kept_cls, cls]) if num_kept else cls
    # positions grouped by class, ascending inside each group (stable sort)
    by_cls = np.argsort(all_cls, kind="stable")
    sorted_cls = all_cls.take(by_cls)
    group_start = _flatnonzero(np.concatenate([[True], sorted_cls[1:] != sorted_cls[:-1]]))
    group_len = np.concatenate([group_start[1:], [sorted_cls.shape[0]]]) - group_start
    # offset of each position inside its class group
    offset = np.arange(sorted_cls.shape[0]) - group_start.repeat(group_len)
    q_sorted = _flatnonzero(by_cls >= num_kept)
    num_pairs_q = offset.take(q_sorted)  # a block position pairs with every earlier one of its class
    total = int(num_pairs_q.sum())
    if total == 0:
        return np.ones(num_block, dtype=bool)
    # pair lists in sorted coordinates: q repeated, p = group start .. q-1
    q_rep = q_sorted.repeat(num_pairs_q)
    pair_start = num_pairs_q.cumsum() - num_pairs_q
    p_rep = q_rep - offset.take(q_rep) + (np.arange(total) - pair_start.repeat(num_pairs_q))
    p = by_cls.take(p_rep)  # positions in kept + block, p < q
    q = by_cls.take(q_rep)
    # np.take of whole rows: much faster than fancy indexing
    all_boxes = np.concatenate([kept_boxes, boxes]) if num_kept else boxes
    all_area = np.concatenate([kept_area, area]) if num_kept else area
    bp, bq = all_boxes.take(p, axis=0), all_boxes.take(q, axis=0)
    # IoU as torchvision's NMS computes it: inter / (area_p + area_q - inter), float32
    w = np.minimum(bp[:, 2], bq[:, 2]) - np.maximum(bp[:, 0], bq[:, 0])
    h = np.minimum(bp[:, 3], bq[:, 3]) - np.maximum(bp[:, 1], bq[:, 1])
    np.maximum(w, 0, out=w)
    np.maximum(h, 0, out=h)
    inter = w * h
    overlap = inter / (all_area.take(p) + all_area.take(q) - inter)
    suppress = overlap > iou_thr
    p, q = p[suppress], q[suppress] - num_kept
    from_kept = p < num_kept
    # candidates suppressed by an already kept detection are out for good
    alive = np.ones(num_block, dtype=bool)
    alive[q[from_kept]] = False
    p, q = p[~from_kept] - num_kept, q[~from_kept]
    live_pair = alive.take(p) & alive.take(q)
    p, q = p[live_pair], q[live_pair]
    keep = alive
    # fixed-point iteration: converges to the greedy result (prefixes become exact one by one)
    while True:
        suppressed = np.zeros(num_block, dtype=bool)
        suppressed[q[keep.take(p)]] = True
        new_keep = alive & ~suppressed
        if not (new_keep ^ keep).any():
            return keep
        keep = new_keep
