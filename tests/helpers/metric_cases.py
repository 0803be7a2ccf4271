"""Detections and ground truth for the mAP and bootstrap tests: ``dets`` from plain lists, and
``random_set``, random images whose detections are jittered copies of their objects (duplicates,
empty images, difficult objects and tied scores included). Boxes are fractions of the image."""
from __future__ import annotations

import numpy as np

from ssd_runtime.metric import GroundTruth
from ssd_runtime.postprocess import Detections

#: Class names of the cases: the background and three classes.
NAMES = ("background", "a", "b", "c")


def dets(boxes, labels, scores) -> Detections:
    """Detections from lists: boxes (K, 4) xyxy, labels (K,), scores (K,)."""
    return Detections(
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(labels, np.int64),
        np.asarray(scores, np.float32),
    )


def random_set(rng: np.random.Generator, num_images: int,
               num_classes: int) -> tuple[list[Detections], list[GroundTruth]]:
    """``num_images`` images of 0-4 objects each (20% difficult) and 0-11 detections (boxes xyxy, fractions)."""
    dets_list, gts = [], []
    for _ in range(num_images):
        g = int(rng.integers(0, 5))
        xy = rng.uniform(0, 0.7, (g, 2))
        gboxes = np.concatenate([xy, xy + rng.uniform(0.05, 0.3, (g, 2))], 1)
        glabels = rng.integers(1, num_classes, g)
        gts.append(GroundTruth.create(gboxes, glabels, rng.random(g) < 0.2))
        # detections: jittered copies of ground truth (some duplicates) plus random boxes
        k = int(rng.integers(0, 12))
        src = rng.integers(0, max(g, 1), k)
        boxes = gboxes[src] + rng.normal(0, 0.04, (k, 4)) if g else rng.uniform(0, 1, (k, 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.01)
        labels = np.where(rng.random(k) < 0.8, glabels[src] if g else 1, rng.integers(1, num_classes, k))
        scores = np.round(rng.random(k), 2)  # coarse scores: plenty of ties
        dets_list.append(dets(boxes, labels, scores))
    return dets_list, gts
