"""Test problems and the slow, literal postprocess the NumPy and torch postprocesses are held to.

Shared by tests/ssd_runtime/test_postprocess.py, test_postprocess_torch.py and test_compare.py.
"""
from __future__ import annotations

import numpy as np

from ssd_runtime.boxes import cxcywh_to_xyxy, decode
from ssd_runtime.detections import Detections
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
    score_thr, iou_thr = settings.min_score_float32, settings.max_overlap_float32
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


def hand_problem():
    """Three priors, classes (bg, a, b); decoding with zero offsets returns the priors."""
    priors = np.array([[0.5, 0.5, 0.2, 0.2], [0.52, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]], np.float32)
    locs = np.zeros((1, 3, 4), np.float32)
    probs = np.array([[0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0.5, 0.2, 0.3]], np.float64)
    return locs, np.log(probs)[None].astype(np.float32), priors
