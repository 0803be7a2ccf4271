"""Drawing detections with Pillow's default font (no font file)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from ssd_runtime.detector import ImageDetections
from ssd_runtime.draw import color_for, draw_detections


def _dets(boxes, labels, scores):
    names = tuple(f"class{i}" for i in labels)
    return ImageDetections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64), names,
                           np.asarray(scores, np.float32), 120, 80)


def test_draws_boxes_and_labels_without_touching_the_input():
    image = Image.new("RGB", (120, 80), (0, 0, 0))
    dets = _dets([[10, 20, 60, 70], [-30, -10, 200, 300]], [1, 2], [0.9, 0.5])  # one box past the edges
    out = draw_detections(image, dets)
    assert out.size == image.size and out.mode == "RGB"
    assert image.getpixel((10, 45)) == (0, 0, 0)  # input unchanged
    assert out.getpixel((10, 45)) == color_for(1)  # left edge of the first box
    assert np.asarray(out).any()


def test_empty_detections_and_other_modes():
    image = Image.new("L", (50, 40), 128)
    out = draw_detections(image, _dets(np.zeros((0, 4)), [], []))
    assert out.mode == "RGB" and np.all(np.asarray(out) == 128)
