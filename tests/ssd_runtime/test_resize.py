"""The model's resize equals a slow reference written plainly here (Pillow's bilinear in exact rationals).

The reference follows Pillow's ``ImagingResample`` definition (libImaging/Resample.c: centre, support,
window, triangle weights normalized to 1, 22-bit coefficients rounded half up, horizontal pass then
vertical, uint8 in between) with Python ``Fraction`` and ``int`` only, so no float, NumPy or Pillow
version takes part in the expected pixels. This file runs unchanged in the edge-stack environment of
``.ci/run`` (Python 3.10, NumPy 1.26, Pillow 12.3, no torch).
"""
from __future__ import annotations

from fractions import Fraction
from math import floor

import numpy as np
import pytest

from ssd_runtime.resize import PREPROCESSING, ResizeError, preprocessing, resize_coefficients, resize_rgb

BITS = 22


def reference_coefficients(inp: int, out: int) -> list[tuple[int, list[int]]]:
    """Per output pixel: (first input index, integer coefficients), Pillow's definition in Fractions."""
    scale = Fraction(inp, out)
    filterscale = max(scale, Fraction(1))
    support = filterscale  # bilinear: support 1, widened by the scale when shrinking
    rows = []
    for i in range(out):
        centre = (i + Fraction(1, 2)) * scale
        xmin = max(floor(centre - support + Fraction(1, 2)), 0)
        xmax = min(floor(centre + support + Fraction(1, 2)), inp)
        weights = []
        for j in range(xmin, xmax):
            x = abs((j - centre + Fraction(1, 2)) / filterscale)
            weights.append(1 - x if x < 1 else Fraction(0))
        total = sum(weights)
        rows.append((xmin, [floor(w / total * 2**BITS + Fraction(1, 2)) for w in weights]))
    return rows


def reference_pass(rows: list[list[int]], out: int) -> list[list[int]]:
    """Resize each row (a list of ints) to ``out`` values."""
    taps = reference_coefficients(len(rows[0]), out)
    result = []
    for row in rows:
        new = []
        for first, coeffs in taps:
            total = 2 ** (BITS - 1)
            for k, c in enumerate(coeffs):
                total += row[first + k] * c
            new.append(min(max(total >> BITS, 0), 255))
        result.append(new)
    return result


def reference_resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (size, size, 3), channel by channel in Python lists."""
    height, width = pixels.shape[:2]
    channels = []
    for c in range(3):
        plane = [[int(v) for v in row] for row in pixels[:, :, c]]
        if width != size:
            plane = reference_pass(plane, size)  # horizontal first
        if height != size:
            columns = [list(col) for col in zip(*plane)]
            plane = [list(row) for row in zip(*reference_pass(columns, size))]
        channels.append(plane)
    return np.stack([np.array(p, dtype=np.uint8) for p in channels], axis=2)


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 (H, W, 3): noise plus gradients and hard edges, every value 0..255 reached."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 2 * 255], axis=2)
    noise = rng.integers(0, 256, (height, width, 3))
    return np.where(rng.random((height, width, 1)) < 0.5, base, noise).astype(np.uint8)


@pytest.mark.parametrize(
    "height, width, size",
    [
        (94, 125, 75),  # VOC's 500 x 375 -> 300, at a quarter of the size (ratio 5:3 and 5:4)
        (125, 94, 75),  # portrait
        (80, 53, 30),  # shrink by 2.67 and 1.77: windows of 7 and 5 pixels
        (13, 7, 40),  # upscale: support 1, windows clipped at both edges
        (1, 1, 5),  # one pixel
        (40, 40, 40),  # same size: a copy
        (37, 300, 300),  # only the vertical pass
        (300, 37, 300),  # only the horizontal pass
        (301, 299, 300),  # one pixel off: the identity-like coefficients
    ],
)
def test_equals_the_plain_reference(height, width, size):
    image = smooth_image(height, width, seed=height * 1000 + width)
    np.testing.assert_array_equal(resize_rgb(image, size), reference_resize(image, size))


def test_coefficients_equal_the_reference_and_sum_to_one():
    for inp, out in ((500, 300), (375, 300), (353, 300), (1000, 300), (640, 300), (7, 300), (300, 300)):
        start, coeff = resize_coefficients(inp, out)
        for i, (first, coeffs) in enumerate(reference_coefficients(inp, out)):
            taps = dict(zip(range(first, first + len(coeffs)), coeffs))
            ours = {int(start[i]) + k: int(c) for k, c in enumerate(coeff[i]) if c}
            assert ours == {j: c for j, c in taps.items() if c}, (inp, out, i)
            # rounding each coefficient moves the sum by at most half a unit per tap
            assert abs(int(coeff[i].sum()) - 2**BITS) <= coeff.shape[1]
        assert (start >= 0).all() and (start + coeff.shape[1] <= inp).all()


def test_golden_pixels_of_a_voc_sized_image():
    """A VOC-sized 500 x 375 image, checked on the rows the reference can afford in pure Python.

    The vertical pass is done by the reference on the horizontally resized rows it computed itself,
    for 12 output rows spread over the image (each needs about 5 input rows).
    """
    image = smooth_image(375, 500, seed=7)
    ours = resize_rgb(image, 300)
    rows = [0, 1, 37, 99, 150, 151, 200, 254, 255, 298, 299, 123]
    v_taps = reference_coefficients(375, 300)
    needed = sorted({v_taps[r][0] + k for r in rows for k in range(len(v_taps[r][1]))})
    for c in range(3):
        horizontal = dict(zip(needed, reference_pass([[int(v) for v in image[y, :, c]] for y in needed], 300)))
        for r in rows:
            first, coeffs = v_taps[r]
            for x in range(300):
                total = 2 ** (BITS - 1) + sum(horizontal[first + k][x] * w for k, w in enumerate(coeffs))
                assert ours[r, x, c] == min(max(total >> BITS, 0), 255), (r, x, c)


def test_does_not_modify_or_alias_its_input():
    image = smooth_image(300, 300, seed=1)
    before = image.copy()
    out = resize_rgb(image, 300)
    assert out is not image and not np.shares_memory(out, image)
    np.testing.assert_array_equal(out, before)
    np.testing.assert_array_equal(image, before)
    # non-contiguous views are taken as they are
    big = smooth_image(120, 160, seed=2)
    np.testing.assert_array_equal(resize_rgb(big[::2, ::2], 30), resize_rgb(np.ascontiguousarray(big[::2, ::2]), 30))


def test_bad_inputs_say_what_is_expected():
    with pytest.raises(ResizeError, match=r"uint8 RGB array of shape \(H, W, 3\)"):
        resize_rgb(np.zeros((4, 4, 3), np.float32), 3)
    with pytest.raises(ResizeError, match=r"\(H, W, 3\)"):
        resize_rgb(np.zeros((4, 4), np.uint8), 3)
    with pytest.raises(ResizeError, match=">= 1"):
        resize_rgb(np.zeros((4, 4, 3), np.uint8), 0)
    with pytest.raises(ResizeError, match="empty image"):
        resize_rgb(np.zeros((0, 4, 3), np.uint8), 3)
    with pytest.raises(ResizeError, match="upgrade ssd300"):
        preprocessing("rgb8-bicubic-v9")
    assert preprocessing("rgb8-bilinear-q22-v1").resize is resize_rgb
    assert all(name == record.name for name, record in PREPROCESSING.items())
