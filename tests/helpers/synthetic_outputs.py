"""Synthetic raw SSD outputs that look like a trained model's, for tests and benchmarks.

Benchmarks import test helpers such as this one; tests never import benchmarks.

A few objects per image get confident, well-localised clusters of priors; on top of that every
class gets about ``candidates_per_class`` scattered low-confidence priors above 0.01, as a trained
SSD300 produces at evaluation settings (min_score 0.01).
"""
from __future__ import annotations

import numpy as np

from ssd_runtime.boxes import cxcywh_to_xyxy, encode, iou, xyxy_to_cxcywh


def synthetic_outputs(
    priors: np.ndarray,
    num_images: int,
    num_classes: int = 21,
    *,
    candidates_per_class: int = 400,
    objects_per_image: int = 3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(locs (N, P, 4), class_logits (N, P, C)) float32 for priors (P, 4) fractional cxcywh."""
    rng = np.random.default_rng(seed)
    num_priors = priors.shape[0]
    priors_xyxy = cxcywh_to_xyxy(priors)
    locs = (rng.standard_normal((num_images, num_priors, 4)) * [0.5, 0.5, 0.3, 0.3]).astype(np.float32)
    # background dominates: other classes sit near score 0.002
    logits = rng.standard_normal((num_images, num_priors, num_classes)).astype(np.float32) * 0.5
    background = 6.0 + rng.standard_normal((num_images, num_priors)).astype(np.float32) * 0.3
    logits[..., 0] = background
    for n in range(num_images):
        for c in range(1, num_classes):
            # scattered low-confidence candidates: score about u in [0.012, 0.15] (log-uniform)
            chosen = rng.choice(num_priors, size=candidates_per_class, replace=False)
            u = np.exp(rng.uniform(np.log(0.012), np.log(0.15), size=candidates_per_class))
            logits[n, chosen, c] = background[n, chosen] + np.log(u / (1 - u)) + 0.5
        for _ in range(objects_per_image):
            c = int(rng.integers(1, num_classes))
            centre = rng.uniform(0.2, 0.8, size=2)
            size = rng.uniform(0.1, 0.6, size=2)
            obj = np.concatenate([centre - size / 2, centre + size / 2])[None]
            overlap = iou(obj, priors_xyxy)[0]
            hits = np.flatnonzero(overlap > 0.4)
            if hits.size == 0:
                continue
            logits[n, hits, c] = background[n, hits] + rng.uniform(0.0, 6.0, size=hits.size)
            jitter = obj + rng.normal(0, 0.02, size=(hits.size, 4))
            jitter[:, 2:] = np.maximum(jitter[:, 2:], jitter[:, :2] + 0.01)
            locs[n, hits] = encode(xyxy_to_cxcywh(jitter), priors[hits]).astype(np.float32)
    return locs, logits
