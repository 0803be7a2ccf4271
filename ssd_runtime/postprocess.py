"""SSD postprocess in NumPy: raw network outputs -> per-image detections (no torch).

Semantics (shared/reference/ssd300.md, "Inference and evaluation"), identical in the torch twin
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
threshold; all implementations here share :func:`float32_threshold` for that.

The NumPy implementation exploits the structure of the problem: a candidate's fate depends only on
higher-ranked candidates of its class, so candidates are processed in the global output order, in
blocks, and processing stops as soon as ``top_k`` detections are kept. Inside a block only pairs of
the same class are formed, and the greedy NMS is resolved exactly by a fixed-point iteration (the
greedy result is the unique fixed point of ``keep[i] = not any(keep[j] and iou[j, i] > t, j < i)``).
Its cost grows with top_k times the detections kept per class: it is built for top_k in the hundreds
(the reference settings); at top_k in the thousands torchvision's C++ NMS is faster.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ssd_runtime.boxes import VARIANCES, cxcywh_to_xyxy, decode, iou
from ssd_runtime.spec import PostprocessSettings

__all__ = [
    "DetectionComparison",
    "Detections",
    "compare_detections",
    "float32_threshold",
    "postprocess",
]


@dataclass(frozen=True)
class Detections:
    """Detections of one image, sorted by score descending (ties: class asc, then prior asc).

    boxes: float32 (K, 4) fractional xyxy (not clipped to the image).
    labels: int64 (K,) class indices in 1..C-1 (0 is background and never reported).
    scores: float32 (K,) softmax scores in (min_score, 1].
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0,), np.float32)
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to_pixels(self, width: int, height: int) -> np.ndarray:
        """Boxes scaled to pixels of an image of the given size, float32 (K, 4) xyxy."""
        scale = np.asarray([width, height, width, height], dtype=np.float32)
        return self.boxes * scale


def float32_threshold(threshold: float) -> np.float32:
    """The largest float32 <= ``threshold``: for float32 x, ``x > result`` iff ``x > threshold``.

    This makes strict comparisons of float32 scores/IoUs against a Python float exact (as torchvision's
    NMS does by comparing against a float64 threshold), whatever precision the comparison runs in.
    """
    value = np.float32(threshold)
    if float(value) > float(threshold):
        value = np.nextafter(value, np.float32(-np.inf))
    return value


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
    score_thr = float32_threshold(settings.min_score)
    iou_thr = float32_threshold(settings.max_overlap)
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


#: Above this IoU, a detection only in one side and one only in the other are the same detection moved,
#: never a tie flip of two candidates (neighbouring priors overlap far less).
TIE_FLIP_MAX_IOU = 0.95


@dataclass
class DetectionComparison:
    """Outcome of :func:`compare_detections`.

    identical: every image agrees, apart from admissible threshold-edge differences.
    num_images, num_detections_a, num_detections_b: sizes compared.
    edge_differences: detections present in only one side (or order swaps of near-equal scores)
        explained by a candidate within ``edge`` of min_score, of the NMS IoU threshold, or of the
        top_k cut, or by a tie flip of two near-equal candidates.
    mismatches: human-readable descriptions of differences that are not explained (empty if identical).
    """

    identical: bool
    num_images: int
    num_detections_a: int
    num_detections_b: int
    edge_differences: int = 0
    mismatches: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "identical": self.identical,
            "num_images": self.num_images,
            "num_detections_a": self.num_detections_a,
            "num_detections_b": self.num_detections_b,
            "edge_differences": self.edge_differences,
            "mismatches": list(self.mismatches),
        }


def compare_detections(
    a: Sequence[Detections],
    b: Sequence[Detections],
    settings: PostprocessSettings | None = None,
    *,
    atol: float = 1e-5,
    edge: float = 1e-6,
) -> DetectionComparison:
    """Check two postprocess results for *identical detections* (shared/reference/ssd300.md).

    Per image: same count, same order, equal labels, boxes and scores within ``atol``. Where that
    fails, detections are matched by (label, box, score within atol); a detection present on one side
    only is admissible when it is a threshold-edge case (needs ``settings``): its score within
    ``edge`` of min_score; its IoU with a higher-scored same-class detection (either side) within
    ``edge`` of max_overlap, or above it when it only overlaps other edge cases (a cascade); or it
    falls at the top_k cut. Adjacent detections whose scores differ by at most ``atol`` may swap, and
    so may the NMS winner of two same-class candidates with scores within ``atol`` that suppress each
    other (a tie flip: each side keeps one of the two; their IoU is at most ``TIE_FLIP_MAX_IOU``).
    Edge cases are counted, other differences listed in ``mismatches``.
    """
    if len(a) != len(b):
        return DetectionComparison(False, len(a), 0, 0, mismatches=[f"{len(a)} vs {len(b)} images"])
    result = DetectionComparison(
        True, len(a), sum(len(d) for d in a), sum(len(d) for d in b)
    )
    for i, (da, db) in enumerate(zip(a, b)):
        if _same(da, db, atol):
            continue
        _compare_image(i, da, db, settings, atol, edge, result)
    result.identical = not result.mismatches
    return result


def _same(da: Detections, db: Detections, atol: float) -> bool:
    return (
        len(da) == len(db)
        and np.array_equal(da.labels, db.labels)
        and bool(np.all(np.abs(da.boxes.astype(np.float64) - db.boxes) <= atol))
        and bool(np.all(np.abs(da.scores.astype(np.float64) - db.scores) <= atol))
    )


def _compare_image(
    index: int,
    da: Detections,
    db: Detections,
    settings: PostprocessSettings | None,
    atol: float,
    edge: float,
    result: DetectionComparison,
) -> None:
    # match detections of a to b: same label, box and score within atol (greedy, in order)
    used_b = np.zeros(len(db), dtype=bool)
    match_a = np.full(len(da), -1)
    for ia in range(len(da)):
        close = (
            ~used_b
            & (db.labels == da.labels[ia])
            & (np.abs(db.scores.astype(np.float64) - da.scores[ia]) <= atol)
            & np.all(np.abs(db.boxes.astype(np.float64) - da.boxes[ia]) <= atol, axis=1)
        )
        hits = np.flatnonzero(close)
        if hits.size:
            match_a[ia] = hits[0]
            used_b[hits[0]] = True
    # order: matched pairs must appear in the same relative order, up to swaps of near-equal scores
    matched = match_a[match_a >= 0]
    for x, y in zip(matched[:-1], matched[1:]):
        if y < x:
            if abs(float(db.scores[x]) - float(db.scores[y])) <= atol:
                result.edge_differences += 1
            else:
                result.mismatches.append(f"image {index}: detections out of order")
                break
    only = [(da, np.flatnonzero(match_a < 0), "a"), (db, np.flatnonzero(~used_b), "b")]
    if settings is None:
        for dets, idx, side in only:
            if idx.size:
                result.mismatches.append(f"image {index}: {idx.size} detections only in {side}")
        return
    unexplained: list[tuple[Detections, int, str]] = []
    explained_any = False
    for dets, idx, side in only:
        for k in idx:
            if _is_edge(dets, int(k), da, db, settings, edge):
                result.edge_differences += 1
                explained_any = True
            else:
                unexplained.append((dets, int(k), side))
    # a tie flip: two same-class candidates with scores within atol that suppress each other; the
    # arithmetic of each side picked a different NMS winner (their order is a tie, as for swaps above)
    flipped: set[tuple[str, int]] = set()
    for dets, k, side in unexplained:
        if side != "a":
            continue
        for other, j, other_side in unexplained:
            if other_side == "b" and ("b", j) not in flipped and _tie_flip(dets, k, other, j, settings, atol, edge):
                flipped.update({("a", k), ("b", j)})
                break
    if flipped:
        result.edge_differences += len(flipped)
        explained_any = True
        unexplained = [(dets, k, side) for dets, k, side in unexplained if (side, k) not in flipped]
    # second pass: a cascade of an edge case, or the top_k cut moved by an edge case
    for dets, k, side in unexplained:
        other = db if side == "a" else da
        at_cut = (
            explained_any
            and len(dets) >= settings.top_k
            and (len(other) == 0 or float(dets.scores[k]) <= float(other.scores.min()) + edge)
        )
        cut_edge = len(dets) >= settings.top_k and len(other) > 0 and (
            abs(float(dets.scores[k]) - float(other.scores.min())) <= edge
        )
        cascade = explained_any and _overlaps_same_class(dets, k, da, db, settings.max_overlap - edge)
        if at_cut or cut_edge or cascade:
            result.edge_differences += 1
        else:
            result.mismatches.append(
                f"image {index}: detection (label {int(dets.labels[k])}, score "
                f"{float(dets.scores[k]):.7f}) only in {side}"
            )


def _tie_flip(
    da: Detections, ka: int, db: Detections, kb: int, settings: PostprocessSettings, atol: float, edge: float
) -> bool:
    # Two different candidates: they overlap enough to suppress each other, but not so much that
    # the pair could be one detection whose box moved (IoU above TIE_FLIP_MAX_IOU is compared as such).
    overlap = _pair_iou(da.boxes[ka], db.boxes[kb : kb + 1])[0]
    return bool(
        da.labels[ka] == db.labels[kb]
        and abs(float(da.scores[ka]) - float(db.scores[kb])) <= atol
        and settings.max_overlap - edge < overlap <= TIE_FLIP_MAX_IOU
    )


def _pair_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box (4,) with boxes (K, 4) -> (K,), float64."""
    return iou(box[None].astype(np.float64), boxes.astype(np.float64))[0]


def _higher_same_class(dets: Detections, k: int, da: Detections, db: Detections) -> np.ndarray:
    """Boxes of detections (either side) of the same label scored at least as high as dets[k]."""
    label, score = dets.labels[k], dets.scores[k]
    parts = [
        d.boxes[(d.labels == label) & (d.scores >= score) & ~((d is dets) & (np.arange(len(d)) == k))]
        for d in (da, db)
    ]
    return np.concatenate(parts)


def _is_edge(
    dets: Detections, k: int, da: Detections, db: Detections, settings: PostprocessSettings, edge: float
) -> bool:
    if abs(float(dets.scores[k]) - settings.min_score) <= edge:
        return True
    higher = _higher_same_class(dets, k, da, db)
    if higher.shape[0] and np.any(np.abs(_pair_iou(dets.boxes[k], higher) - settings.max_overlap) <= edge):
        return True
    return False


def _overlaps_same_class(
    dets: Detections, k: int, da: Detections, db: Detections, threshold: float
) -> bool:
    higher = _higher_same_class(dets, k, da, db)
    return bool(higher.shape[0] and np.any(_pair_iou(dets.boxes[k], higher) > threshold))
