"""The reference augmentation: geometry consistent with pixels, fast path equal to the literal one."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from ssd_train.augment import (
    CROP_ASPECT,
    FILLER,
    _brightness,
    _contrast,
    _hue,
    _saturation,
    render_window,
    sample_crop,
    train_transform,
)
from ssd_train import augment

from tests.helpers.augment_reference import hue_reference, reference_train_transform


def _textured(width=200, height=150, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 10, width // 10, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BILINEAR)


def _scene(seed: int) -> tuple[Image.Image, np.ndarray]:
    """A dark image with one bright magenta rectangle; its box in the reference pixel frame."""
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(120, 260)), int(rng.integers(120, 260))
    arr = np.full((height, width, 3), 40, dtype=np.uint8)
    w, h = int(rng.integers(20, width // 2)), int(rng.integers(20, height // 2))
    x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
    arr[y0 : y0 + h, x0 : x0 + w] = (255, 0, 255)
    # annotation in 1-based inclusive pixels is (x0+1, y0+1, x0+w, y0+h); the reader subtracts 1
    box = np.array([[x0, y0, x0 + w - 1, y0 + h - 1]], dtype=np.float32)
    return Image.fromarray(arr), box


@pytest.mark.parametrize("seed", range(60))
def test_drawn_rectangle_stays_inside_its_transformed_box(seed):
    image, box = _scene(seed)
    pixels, boxes, labels, difficult = train_transform(image, box, np.array([1]), np.array([False]), np.random.default_rng(seed))
    assert pixels.shape == (300, 300, 3) and pixels.dtype == np.uint8
    if boxes.shape[0] == 0:
        return  # cropped away (its centre left the crop)
    assert boxes.shape == (1, 4) and labels.tolist() == [1] and difficult.tolist() == [False]
    assert np.all((boxes >= 0) & (boxes <= 1)) and np.all(boxes[:, 2:] > boxes[:, :2])
    # the rectangle's pixels (magenta-ish after photometric changes: red and blue high vs green)
    p = pixels.astype(int)
    rect = (p[..., 0] - p[..., 1] > 60) & (p[..., 2] - p[..., 1] > 60)
    ys, xs = np.nonzero(rect)
    if xs.size == 0:
        return
    x0, y0, x1, y1 = boxes[0] * 300
    # replay the draws to know the crop size: output pixels per source pixel
    replay = np.random.default_rng(seed)
    augment.sample_photometric(replay)
    cw, ch, left, top = augment.sample_expand(image.width, image.height, replay)
    window, _ = augment.sample_crop(cw, ch, box + np.array([left, top, left, top], np.float32), replay)
    sx, sy = 300 / (window[2] - window[0]), 300 / (window[3] - window[1])
    # tolerance: one source pixel (the reference's inclusive-index frame) + the bilinear footprint
    tol_x, tol_y = 1.5 + 1.5 * sx, 1.5 + 1.5 * sy
    assert xs.min() >= x0 - tol_x and xs.max() + 1 <= x1 + tol_x
    assert ys.min() >= y0 - tol_y and ys.max() + 1 <= y1 + tol_y
    # and the box is tight: the rectangle fills most of it
    assert rect[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))].mean() > 0.5


@pytest.mark.parametrize("seed", range(4))
def test_test_transform_keeps_rectangle_in_box(seed):
    image, box = _scene(seed)
    pixels, boxes = augment.test_transform(image, box)
    p = pixels.astype(int)
    rect = (p[..., 0] > 150) & (p[..., 1] < 100)
    ys, xs = np.nonzero(rect)
    x0, y0, x1, y1 = boxes[0] * 300
    assert xs.min() >= x0 - 1.5 and xs.max() + 1 <= x1 + 1.5 + 300 / image.width
    assert ys.min() >= y0 - 1.5 and ys.max() + 1 <= y1 + 1.5 + 300 / image.height


@pytest.mark.parametrize("seed", range(25))
def test_fast_path_matches_the_literal_reference(seed):
    image = _textured(seed=seed)
    rng = np.random.default_rng(100 + seed)
    boxes = np.array([[20, 30, 120, 110], [100, 10, 190, 60], [5, 90, 60, 140]], dtype=np.float32)
    labels, difficult = np.array([1, 2, 3]), np.array([False, True, False])
    fast = train_transform(image, boxes, labels, difficult, np.random.default_rng(seed))
    ref = reference_train_transform(image, boxes, labels, difficult, np.random.default_rng(seed))
    np.testing.assert_array_equal(fast[1], ref[1])
    np.testing.assert_array_equal(fast[2], ref[2])
    np.testing.assert_array_equal(fast[3], ref[3])
    diff = np.abs(fast[0].astype(int) - ref[0].astype(int))
    assert diff.mean() < 2.0, diff.mean()  # photometric after resize differs only at edges / clipping
    del rng


def test_render_window_equals_materialised_canvas():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (75, 100, 3), dtype=np.uint8))
    for trial in range(80):
        scale = rng.uniform(1, 4) if trial % 2 else 1.0
        cw, ch = int(scale * 100), int(scale * 75)
        left, top = int(rng.integers(0, cw - 100 + 1)), int(rng.integers(0, ch - 75 + 1))
        nw, nh = max(1, int(rng.uniform(0.3, 1) * cw)), max(1, int(rng.uniform(0.3, 1) * ch))
        x0, y0 = int(rng.integers(0, cw - nw + 1)), int(rng.integers(0, ch - nh + 1))
        canvas = Image.new("RGB", (cw, ch), FILLER)
        canvas.paste(image, (left, top))
        expected = np.asarray(canvas.crop((x0, y0, x0 + nw, y0 + nh)).resize((300, 300), Image.BILINEAR)).astype(int)
        got = np.asarray(render_window(image, (left, top), (x0, y0, x0 + nw, y0 + nh), 300)).astype(int)
        diff = np.abs(expected - got)
        assert diff.max() <= 2 and diff.mean() < 0.05, trial  # fixed-point rounding only


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.3, 1.5])
def test_lut_ops_equal_imageenhance(factor):
    image = _textured()
    for ours, theirs in ((_brightness, ImageEnhance.Brightness), (_contrast, ImageEnhance.Contrast), (_saturation, ImageEnhance.Color)):
        diff = np.abs(np.asarray(ours(image, factor)).astype(int) - np.asarray(theirs(image).enhance(factor)))
        assert diff.max() <= 1


@pytest.mark.parametrize("factor", [-18 / 255, -5 / 255, 0.0, 7 / 255, 18 / 255])
def test_fast_hue_within_two_levels_of_pil_hsv(factor):
    image = _textured()
    diff = np.abs(np.asarray(_hue(image, factor)).astype(int) - np.asarray(hue_reference(image, factor)))
    assert diff.max() <= 2


def test_same_seed_same_sample_and_images_without_objects():
    image = _textured()
    empty = np.zeros((0, 4), np.float32)
    a = train_transform(image, empty, np.zeros(0, np.int64), np.zeros(0, bool), np.random.default_rng(3))
    b = train_transform(image, empty, np.zeros(0, np.int64), np.zeros(0, bool), np.random.default_rng(3))
    assert np.array_equal(a[0], b[0]) and a[1].shape == (0, 4)


def test_crop_rules_and_choice_frequencies():
    rng = np.random.default_rng(0)
    boxes = np.array([[50, 50, 150, 120]], dtype=np.float32)
    full = 0
    for _ in range(700):
        (left, top, right, bottom), keep = sample_crop(200, 150, boxes, rng)
        if (left, top, right, bottom) == (0, 0, 200, 150):
            full += 1
            continue
        w, h = right - left, bottom - top
        assert CROP_ASPECT[0] < h / w < CROP_ASPECT[1]
        assert w >= int(0.3 * 200) and h >= int(0.3 * 150) and 0 <= left and right <= 200
        assert keep.all()  # the only box's centre must be inside
    assert 60 < full < 160  # "no crop" is 1 of 7 choices (plus rare full-size crops): ~100 of 700


def test_augmentation_probabilities():
    # flip p = 0.5 and expand p = 0.5: check the rates over many draws
    from ssd_train.augment import sample_expand

    rng = np.random.default_rng(1)
    expanded = sum(sample_expand(100, 80, rng)[0] != 100 or False for _ in range(2000))
    assert 900 < expanded < 1100


def test_fast_point_equals_pillow_point():
    from ssd_train.augment import _blend_lut, _point

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (17, 23, 3), dtype=np.uint8))
    lut = _blend_lut(97.0, 1.37)
    np.testing.assert_array_equal(np.asarray(_point(rgb, lut)), np.asarray(rgb.point(lut)))
    gray = rgb.convert("L")
    np.testing.assert_array_equal(np.asarray(_point(gray, lut[:256])), np.asarray(gray.point(lut[:256])))


@pytest.mark.parametrize("seed", range(12))
def test_light_mode_never_zooms_out_and_flip_mode_only_flips(seed, monkeypatch):
    from ssd_train.augment import test_transform

    image, box = _scene(seed)
    labels, difficult = np.array([1]), np.array([False])
    plain, plain_boxes = test_transform(image, box)
    flipped, boxes, _, _ = train_transform(image, box, labels, difficult, np.random.default_rng(seed), mode="flip")
    if np.array_equal(flipped, plain):
        np.testing.assert_allclose(boxes, plain_boxes, atol=1e-6)
    else:  # mirrored pixels, mirrored box (the reference's x -> W - 1 - x, in fractions of the width)
        np.testing.assert_array_equal(flipped, plain[:, ::-1])
        shift = 1.0 / image.width
        expected = np.stack([1 - plain_boxes[:, 2] - shift, plain_boxes[:, 1], 1 - plain_boxes[:, 0] - shift,
                             plain_boxes[:, 3]], axis=1)
        np.testing.assert_allclose(boxes, np.clip(expected, 0, 1), atol=1e-6)

    def no_expand(*args):
        raise AssertionError("the light mode drew a zoom-out")

    monkeypatch.setattr(augment, "sample_expand", no_expand)
    pixels, boxes, _, _ = train_transform(image, box, labels, difficult, np.random.default_rng(seed), mode="light")
    assert pixels.shape == (300, 300, 3) and np.all((boxes >= 0) & (boxes <= 1))
    with pytest.raises(ValueError, match="augmentation mode"):
        train_transform(image, box, labels, difficult, np.random.default_rng(seed), mode="heavy")
