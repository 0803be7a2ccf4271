"""Paired bootstrap intervals over images for mAP deltas (``docs/evaluation.md``, "Reading the intervals").

A delta between two models on one image set is one draw: another set of the same size would give
another delta. The paired bootstrap estimates that spread from the set itself: draw the images with
replacement (``num_images`` draws, one resample), compute both models' VOC mAP on the drawn set with
the toolkit's own metric, take their difference; repeat; the interval is the central ``level``
percentiles of the differences. Both models see the same resamples, so what they have in common (hard
images, rare classes) cancels and the interval measures how much the *difference* depends on the images.

Fast and exact. Matching is per image (:class:`~ssd_runtime.metric.Matches`): a drawn image brings its
detections with the TP/FP flags they already had and its ground truth, so a resample is a weighting of
images by how often they were drawn, and its AP per class is a cumsum over the class's ranked
detections, each repeated as often as its image was drawn (:func:`resampled_aps`), then the metric's own
``class_curve`` / ``average_precision``. That equals running :func:`~ssd_runtime.metric.map_of_detections` on the
literal resampled set (the drawn images in index order, each copy a separate image) to the last bit,
including exact score ties (``tests/ssd_runtime/test_bootstrap.py``). Measured with
``python -m benchmarks.bootstrap`` (500 images x 200 detections, 1000 resamples, one thread, AMD EPYC, a
shared 2-core machine): 3.1-3.5 s per model, 8.3-9.0 s for a paired interval, where building and
evaluating each resampled set literally would cost at least 1000 x ``map_of_detections`` = 27-33 s.

Deterministic: the resamples are drawn from ``numpy.random.default_rng(seed)``; the seed, the number of
resamples and the level are recorded beside every interval (:meth:`BootstrapSettings.to_dict`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssd_runtime.errors import FormatError
from ssd_runtime.fileio import atomic_path
from ssd_runtime.formats import FORMAT_KEY, MATCHES, VERSION_KEY
from ssd_runtime.metric import ClassMatches, Matches, class_curve, mean_ap

__all__ = [
    "INTERVAL_LEVEL", "MATCHES_FORMAT", "MATCHES_SCHEMA", "RESAMPLES", "SEED", "BootstrapError", "BootstrapSettings",
    "MatchesFileError", "PairedIntervals", "check_paired", "format_interval", "interval_wider_than_target", "load_matches",
    "paired_bootstrap", "paired_intervals",
    "resample_weights", "resampled_aps", "resampled_maps", "save_matches",
]  # fmt: skip

#: Resamples per interval: 1000 cost 3.1-3.5 s per model on 500 images x 200 detections. Their Monte Carlo
#: error: on that set (``benchmarks.bootstrap``'s two models) seeds 0-3 moved the ends of a 1.08-1.19 point
#: wide interval by up to 0.085 points (7% of its width); more resamples cost proportionally more time.
RESAMPLES = 1000
#: Central probability of the interval.
INTERVAL_LEVEL = 0.95
#: Seed of the resamples: every report with the same images, models and settings has the same intervals.
SEED = 0

MATCHES_FORMAT = MATCHES.name
#: Version of the matches file (:func:`save_matches`); bumped when a field changes meaning or is removed.
MATCHES_SCHEMA = MATCHES.version
METHOD = "paired percentile bootstrap over images"


class BootstrapError(ValueError):
    """Bad bootstrap settings, or two results that cannot be paired (other images, classes or AP method)."""


class MatchesFileError(FormatError):
    """A matches file that is not one (:func:`load_matches`), or of another schema version."""


@dataclass(frozen=True)
class BootstrapSettings:
    """How the intervals are drawn: ``resamples`` draws of the image set, the central ``level`` of the
    paired differences, resamples from ``numpy.random.default_rng(seed)``."""

    resamples: int = RESAMPLES
    level: float = INTERVAL_LEVEL
    seed: int = SEED

    def __post_init__(self) -> None:
        if isinstance(self.resamples, bool) or not isinstance(self.resamples, int) or self.resamples < 2:
            raise BootstrapError(f"resamples must be an integer >= 2 (default {RESAMPLES}), got {self.resamples!r}")
        if not 0.0 < float(self.level) < 1.0:
            raise BootstrapError(f"interval level must be in (0, 1), e.g. {INTERVAL_LEVEL}, got {self.level!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise BootstrapError(f"seed must be an integer >= 0 (default {SEED}), got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": METHOD, "resamples": self.resamples, "interval_level": self.level, "seed": self.seed}


@dataclass(frozen=True)
class PairedIntervals:
    """Intervals of ``model - reference`` in mAP points (1 point = 0.01): the mAP's, and each class's AP's.

    A class's interval is None where no resample has its ground truth (the class has no AP).
    """

    settings: BootstrapSettings
    map: tuple[float, float] | None
    classes: dict[str, tuple[float, float] | None]


def resample_weights(num_images: int, settings: BootstrapSettings = BootstrapSettings()) -> np.ndarray:
    """How often each image is drawn in each resample: int64 (resamples, num_images), each row summing to
    ``num_images`` (``num_images`` draws with replacement, from ``default_rng(settings.seed)``)."""
    rng = np.random.default_rng(settings.seed)
    drawn = rng.integers(0, num_images, size=(settings.resamples, num_images))  # (R, I) image indices
    # (R, I) draws -> (R, I) counts: one bincount over row-offset indices
    flat = drawn + (np.arange(settings.resamples, dtype=np.int64) * num_images)[:, None]
    return np.bincount(flat.reshape(-1), minlength=settings.resamples * num_images).reshape(
        settings.resamples, num_images)


def resampled_aps(matches: Matches, weights: np.ndarray) -> np.ndarray:
    """AP of every class on every resample: float64 (R, C - 1), nan where a resample has none of the
    class's ground truth. ``weights``: int (R, num_images), how often each image is drawn.

    Equal to ``map_of_detections`` on the literal resampled set with the drawn images in index order: a detection of
    an image drawn w times is ranked w times in a row (its copies tie and come in image order), except
    where one image holds several counted detections of a class at one score; those repeat as a block
    per copy (a1 b1 a2 b2), as the copies' image order ranks them.
    """
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[1] != matches.num_images:
        raise BootstrapError(f"weights must be (resamples, {matches.num_images}), got {weights.shape}")
    num_pos = weights.astype(np.int64) @ matches.positives  # (R, I) @ (I, C-1) -> (R, C-1)
    aps = np.full(num_pos.shape, np.nan)
    for c, cm in enumerate(matches.classes):
        runs = _tie_runs(cm)
        for r in range(weights.shape[0]):
            if num_pos[r, c] == 0:
                continue  # no ground truth drawn: AP nan, as map_of_detections
            w = weights[r, cm.image]  # (K,) copies of each ranked detection
            if runs is None:
                true_positive = np.repeat(cm.true_positive, w)
            else:
                true_positive = cm.true_positive[_tied_order(runs, w)]
            aps[r, c] = class_curve(true_positive, int(num_pos[r, c]), matches.ap_method)[2]
    return aps


def resampled_maps(aps: np.ndarray) -> np.ndarray:
    """mAP of each resample from :func:`resampled_aps` (R, C - 1) -> (R,), the metric's own mean."""
    return np.array([mean_ap(row) for row in aps], dtype=np.float64)


def _tie_runs(cm: ClassMatches) -> np.ndarray | None:
    """Run id (K,) of each ranked detection (a run: consecutive detections of one image at one score),
    or None when every run has one detection (then plain repetition ranks the copies right)."""
    if cm.image.size < 2:
        return None
    new_run = np.concatenate([[True], (cm.image[1:] != cm.image[:-1]) | (cm.scores[1:] != cm.scores[:-1])])
    if new_run.all():
        return None
    return np.cumsum(new_run) - 1


def _tied_order(runs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Detection index of each ranked copy when runs of tied detections repeat as blocks (a1 b1 a2 b2)."""
    detection = np.repeat(np.arange(w.size), w)  # (sum w,) expanded -> detection
    first = np.cumsum(w) - w
    copy = np.arange(detection.size) - np.repeat(first, w)  # which copy of its image
    key = runs[detection] * (int(w.max(initial=0)) + 1) + copy  # (run, copy), in-image order kept by stability
    return detection[np.argsort(key, kind="stable")]


def check_paired(model: Matches, reference: Matches) -> None:
    """Refuse two results that cannot be paired: other classes, AP rules or images (count, ground truth)."""
    if model.class_names != reference.class_names:
        raise BootstrapError(f"the two results have other classes ({model.class_names} vs {reference.class_names})")
    if model.ap_method != reference.ap_method or model.iou_threshold != reference.iou_threshold:
        raise BootstrapError(f"the two results use other AP rules ({model.ap_method} at IoU {model.iou_threshold} "
                             f"vs {reference.ap_method} at IoU {reference.iou_threshold})")
    if model.num_images != reference.num_images or not np.array_equal(model.positives, reference.positives):
        raise BootstrapError(f"the two results are of other images ({model.num_images} vs {reference.num_images} "
                             "images, or other ground truth): evaluate both on the same image list")


def paired_bootstrap(model: Matches, reference: Matches,
                     settings: BootstrapSettings = BootstrapSettings()) -> PairedIntervals:
    """Intervals of ``model - reference`` (mAP and per-class AP, in points) over the same resamples of images.

    Both must be the same images (count and positives per image and class), classes and AP method. To pair
    several models with one reference, compute the reference's :func:`resampled_aps` once and call
    :func:`paired_intervals` per model (the deploy report does).
    """
    check_paired(model, reference)
    weights = resample_weights(model.num_images, settings)
    return paired_intervals(resampled_aps(model, weights), resampled_aps(reference, weights), model.class_names,
                            settings)


def paired_intervals(model_aps: np.ndarray, reference_aps: np.ndarray, class_names: tuple[str, ...],
                     settings: BootstrapSettings) -> PairedIntervals:
    """The intervals of ``model - reference`` from both models' :func:`resampled_aps` (R, C - 1) over the same
    resamples (``resample_weights(num_images, settings)``); ``class_names`` with the background first."""
    diffs = (resampled_maps(model_aps) - resampled_maps(reference_aps)) * 100.0
    class_diffs = (model_aps - reference_aps) * 100.0  # (R, C-1), nan where the class has no ground truth drawn
    return PairedIntervals(
        settings, _percentiles(diffs, settings.level),
        {name: _percentiles(class_diffs[:, c], settings.level) for c, name in enumerate(class_names[1:])})


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float] | None:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    lo, hi = np.percentile(values, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(lo), float(hi)


def interval_wider_than_target(interval: tuple[float, float] | None, target: float | None) -> bool | None:
    """Whether ``interval`` (points) is wider than the band ``[-target, +target]`` it is judged against.

    Then no delta measured on these images can show the target met or missed with the interval's
    confidence: the image set is too small for the target (None where either is unknown).
    """
    if interval is None or target is None:
        return None
    return bool(interval[1] - interval[0] > 2.0 * target)


def format_interval(interval: list[float] | tuple[float, float] | None) -> str:
    """``[-0.123, +0.045]`` (points), or ``n/a``."""
    return "n/a" if interval is None else f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"


# ------------------------------------------------------------------------------------- the file


def save_matches(path: str | os.PathLike, matches: Matches, image_list_sha256: str | None = None) -> None:
    """Write ``matches`` (atomically) as an ``.npz``: what a later :func:`paired_bootstrap` needs of a model's
    evaluation without its detections. ``image_list_sha256``: the evaluated image list's, checked on pairing."""
    counts = np.array([cm.image.size for cm in matches.classes], dtype=np.int64)
    empty = np.zeros(0)
    arrays = {
        **{key: np.array(value) for key, value in MATCHES.header().items()},  # format, schema_version
        "class_names": np.array(matches.class_names), "num_images": np.array(matches.num_images),
        "ap_method": np.array(matches.ap_method), "iou_threshold": np.array(matches.iou_threshold),
        "image_list_sha256": np.array(image_list_sha256 or ""), "positives": matches.positives,
        "class_counts": counts,  # counted detections per class: the split points of the arrays below
        "num_detections": np.array([cm.num_detections for cm in matches.classes], dtype=np.int64),
        "image": np.concatenate([cm.image for cm in matches.classes] or [empty]).astype(np.int64),
        "true_positive": np.concatenate([cm.true_positive for cm in matches.classes] or [empty]).astype(bool),
        "scores": np.concatenate([cm.scores for cm in matches.classes] or [empty]).astype(np.float64),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_matches(path: str | os.PathLike) -> tuple[Matches, str | None]:
    """The :class:`Matches` of a file written by :func:`save_matches`, and its image list's sha256 (or None)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise MatchesFileError(f"{path} is not a matches file ({exc}); rerun the evaluation that wrote it") from exc
    header = {key: arrays[key].item() for key in (FORMAT_KEY, VERSION_KEY) if key in arrays}  # 0-d arrays
    MATCHES.check(header, str(path), error=MatchesFileError)
    bounds = np.concatenate([[0], np.cumsum(arrays["class_counts"])])
    classes = tuple(
        ClassMatches(arrays["image"][a:b], arrays["true_positive"][a:b], arrays["scores"][a:b], int(n))
        for a, b, n in zip(bounds[:-1], bounds[1:], arrays["num_detections"]))
    matches = Matches(tuple(str(n) for n in arrays["class_names"]), int(arrays["num_images"]),
                      str(arrays["ap_method"]), float(arrays["iou_threshold"]), arrays["positives"], classes)
    return matches, str(arrays["image_list_sha256"]) or None
