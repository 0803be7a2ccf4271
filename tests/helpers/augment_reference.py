"""The literal reference augmentation, slow: the oracle the fast path in ``ssd_train.augment`` is held to.

Used by tests/ssd_train/test_augment.py and, for a CPU-time comparison, ``python -m
benchmarks.data_loading`` (``--compare N``). Not part of the package: training uses
:func:`ssd_train.augment.train_transform`.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ssd_train.augment import (
    _DISTORTIONS,
    FILLER,
    FLIP_P,
    _crop_boxes,
    _finish_boxes,
    sample_crop,
    sample_expand,
    sample_photometric,
)

__all__ = ["hue_reference", "reference_train_transform"]


def hue_reference(image: Image.Image, factor: float) -> Image.Image:
    """torchvision's PIL ``adjust_hue`` itself (HSV round trip through PIL)."""
    shift = int(factor * 255) % 256
    h, s, v = image.convert("HSV").split()
    h = h.point([(i + shift) % 256 for i in range(256)])
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def reference_train_transform(
    image: Image.Image,
    boxes: np.ndarray,
    labels: np.ndarray,
    difficult: np.ndarray,
    rng: np.random.Generator,
    size: int = 300,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The literal reference pipeline (full-size distortion with PIL's own HSV hue, materialised
    zoom-out canvas, crop, flip, resize) with the same draws as :func:`ssd_train.augment.train_transform`.

    Same arguments and returns as ``train_transform`` in its default ("reference") mode.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    plan = sample_photometric(rng)
    for name, factor in plan:
        image = hue_reference(image, factor) if name == "hue" else _DISTORTIONS[name](image, factor)
    width, height = image.size
    canvas_w, canvas_h, left, top = sample_expand(width, height, rng)
    canvas = Image.new("RGB", (canvas_w, canvas_h), FILLER)
    canvas.paste(image, (left, top))
    canvas_boxes = boxes + np.array([left, top, left, top], dtype=np.float32)
    window, keep = sample_crop(canvas_w, canvas_h, canvas_boxes, rng)
    flip = rng.random() < FLIP_P
    new_boxes = _crop_boxes(canvas_boxes, window, keep)
    cropped = canvas.crop(window)
    if flip:
        cropped = cropped.transpose(Image.FLIP_LEFT_RIGHT)
    pixels = np.asarray(cropped.resize((size, size), Image.BILINEAR))
    crop_w, crop_h = window[2] - window[0], window[3] - window[1]
    return (
        np.ascontiguousarray(pixels),
        _finish_boxes(new_boxes, crop_w, crop_h, flip),
        np.asarray(labels)[keep],
        np.asarray(difficult)[keep],
    )
