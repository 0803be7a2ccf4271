"""The postprocess's result type, :class:`Detections`, and the exact float32 threshold both postprocesses share.

Produced by the NumPy postprocess (:mod:`ssd_runtime.postprocess`) and the torch one
(:mod:`ssd_runtime.postprocess_torch`), read by the metric, the detector and the detection comparison
(:mod:`ssd_runtime.compare`). No torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Detections", "ImageDetections", "float32_threshold"]


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


@dataclass(frozen=True)
class ImageDetections:
    """Detections of one image, score-sorted (ties: class asc, then prior asc).

    boxes: float32 (K, 4) xyxy in pixels of the image as given (not clipped to it); labels: int64 (K,)
    class indices (1..C-1); class_names: the K names; scores: float32 (K,); width, height: the image size.
    """

    boxes: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    scores: np.ndarray
    width: int
    height: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to_dict(self) -> dict:
        """JSON-able: image size and one entry per detection (box in pixels, label, class name, score)."""
        return {
            "width": self.width,
            "height": self.height,
            "detections": [
                {"box": [round(float(v), 3) for v in box], "label": int(label), "class_name": name,
                 "score": round(float(score), 6)}
                for box, label, name, score in zip(self.boxes, self.labels, self.class_names, self.scores)
            ],
        }
