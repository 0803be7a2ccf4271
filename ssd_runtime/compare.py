"""Whether two postprocess results hold *identical detections* (``docs/reference.md``, "Identical detections").

:func:`compare_detections` checks two lists of :class:`~ssd_runtime.detections.Detections` (NumPy vs
torch postprocess, checkpoint vs exported model) and admits only threshold-edge differences: a
candidate within ``edge`` of min_score, of the NMS IoU threshold or of the top_k cut, order swaps of
near-equal scores, and NMS tie flips of two near-equal candidates. No torch.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ssd_runtime.boxes import iou
from ssd_runtime.detections import Detections
from ssd_runtime.spec import PostprocessSettings

__all__ = ["TIE_FLIP_MAX_IOU", "DetectionComparison", "compare_detections"]


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
    """Check two postprocess results for *identical detections* (``docs/reference.md``).

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
