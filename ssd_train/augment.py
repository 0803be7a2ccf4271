"""The reference SSD300 training augmentation (and the test transform), computed efficiently.

Order, probabilities and ranges follow ``../shared/reference/ssd300.md`` ("Data"):

1. photometric distortion: brightness, contrast, saturation (factors in [0.5, 1.5]) and hue (shift in
   [-18/255, 18/255]) in a random order, each with p = 0.5 (PIL ImageEnhance / HSV, as torchvision's
   PIL backend that the reference calls);
2. zoom-out "expand" with p = 0.5 to a canvas 1-4x the size filled with the ImageNet mean
   (:data:`FILLER`, the reference's ``to_pil_image`` truncation of mean * 255);
3. random crop (min IoU from {0, 0.1, 0.3, 0.5, 0.7, 0.9, no crop}, up to 50 trials per choice, side
   scale 0.3-1, aspect h/w strictly in (0.5, 2), keep boxes whose centre lies strictly inside, at least
   one box reaching the min IoU);
4. horizontal flip with p = 0.5;
5. bilinear resize to ``size`` x ``size`` with fractional boxes (then the caller normalises).

Efficiency: the expanded canvas (up to 16x the image) is never built. Steps 2-5 are composed into one
window on the virtual canvas; :func:`render_window` resizes only the image part (plus a margin of
filler as wide as the filter support) and pastes it on a filler-coloured output, which gives the same
pixels as resizing the materialised crop (to within 1 grey level of fixed-point rounding). The flip is
applied to the 300x300 output (a bilinear resize commutes with a mirror).

Box frame: pixel xyxy in the reference's convention (0-based inclusive pixel indices, so a flip maps
x -> W - 1 - x), until the final division by the crop size. Final fractional boxes are clipped to
[0, 1] (the reference can leave a -1/W after flipping a box that touches the crop edge).
Images without objects are valid: a crop is then accepted at its first trial with a valid aspect.

Every random draw comes from the ``numpy.random.Generator`` passed in, in a fixed order, so one seed
reproduces a sample exactly.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance

from ssd_runtime.boxes import iou

#: ImageNet mean * 255 truncated to uint8, the reference's expand filler after ``to_pil_image``.
FILLER = (123, 116, 103)
#: Photometric factor range (brightness, contrast, saturation) and hue shift bound (fraction of a turn).
FACTOR_RANGE = (0.5, 1.5)
HUE_SHIFT = 18 / 255
PHOTOMETRIC_P = 0.5
EXPAND_P = 0.5
EXPAND_MAX_SCALE = 4.0
CROP_MIN_IOUS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, None)
CROP_TRIALS = 50
CROP_MIN_SCALE = 0.3
CROP_ASPECT = (0.5, 2.0)
FLIP_P = 0.5


def _hue(image: Image.Image, factor: float) -> Image.Image:
    """Shift the HSV hue channel by int(factor * 255) (mod 256), as torchvision's PIL adjust_hue."""
    shift = int(factor * 255) % 256
    h, s, v = image.convert("HSV").split()
    h = h.point([(i + shift) % 256 for i in range(256)])
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def _brightness(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(factor)


def _contrast(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(factor)


def _saturation(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Color(image).enhance(factor)


_DISTORTIONS = (_brightness, _contrast, _saturation, _hue)


def photometric_distort(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Reference photometric distortion of an RGB PIL image (random order, each op with p = 0.5)."""
    for op_index in rng.permutation(len(_DISTORTIONS)):
        op = _DISTORTIONS[op_index]
        if rng.random() < PHOTOMETRIC_P:
            if op is _hue:
                factor = rng.uniform(-HUE_SHIFT, HUE_SHIFT)
            else:
                factor = rng.uniform(*FACTOR_RANGE)
            image = op(image, factor)
    return image


def sample_expand(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Zoom-out draw: (canvas_w, canvas_h, left, top) of the image on its canvas (no-op = image itself)."""
    if rng.random() >= EXPAND_P:
        return width, height, 0, 0
    scale = rng.uniform(1.0, EXPAND_MAX_SCALE)
    canvas_w, canvas_h = int(scale * width), int(scale * height)
    left = int(rng.integers(0, canvas_w - width + 1))
    top = int(rng.integers(0, canvas_h - height + 1))
    return canvas_w, canvas_h, left, top


def sample_crop(
    width: int, height: int, boxes: np.ndarray, rng: np.random.Generator
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Reference random crop on a width x height canvas with pixel xyxy ``boxes`` (K, 4).

    Returns ((left, top, right, bottom), keep) where ``keep`` (K,) bool marks boxes whose centre lies
    strictly inside the crop. "No crop" returns the full canvas and keeps every box.
    """
    num_boxes = boxes.shape[0]
    full = ((0, 0, width, height), np.ones(num_boxes, dtype=bool))
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    while True:
        min_iou = CROP_MIN_IOUS[int(rng.integers(len(CROP_MIN_IOUS)))]
        if min_iou is None:
            return full
        for _ in range(CROP_TRIALS):
            new_h = int(rng.uniform(CROP_MIN_SCALE, 1.0) * height)
            new_w = int(rng.uniform(CROP_MIN_SCALE, 1.0) * width)
            if new_w <= 0 or not CROP_ASPECT[0] < new_h / new_w < CROP_ASPECT[1]:
                continue
            left = int(rng.integers(0, width - new_w + 1))
            top = int(rng.integers(0, height - new_h + 1))
            right, bottom = left + new_w, top + new_h
            if num_boxes == 0:
                return (left, top, right, bottom), np.zeros(0, dtype=bool)
            crop = np.array([[left, top, right, bottom]], dtype=np.float32)
            if iou(crop, boxes.astype(np.float32))[0].max() < min_iou:
                continue
            keep = (
                (centers[:, 0] > left) & (centers[:, 0] < right) & (centers[:, 1] > top) & (centers[:, 1] < bottom)
            )
            if not keep.any():
                continue
            return (left, top, right, bottom), keep


def render_window(
    image: Image.Image,
    placement: tuple[int, int],
    window: tuple[int, int, int, int],
    size: int,
    filler: tuple[int, int, int] = FILLER,
) -> Image.Image:
    """Bilinear-resize a window of a virtual filler canvas holding ``image`` to ``size`` x ``size``.

    placement: (left, top) of the image on the canvas, pixels. window: (x0, y0, x1, y1) on the canvas,
    integer pixels, exclusive end. Equivalent to materialising the canvas, cropping ``window`` and
    resizing it, but the work is proportional to the output and the image, not the canvas.
    """
    width, height = image.size
    left, top = placement
    wx0, wy0, wx1, wy1 = window
    win_w, win_h = wx1 - wx0, wy1 - wy0
    # image rectangle relative to the window, in source pixels
    ix0, iy0 = left - wx0, top - wy0
    ix1, iy1 = ix0 + width, iy0 + height
    if ix0 <= 0 and iy0 <= 0 and ix1 >= win_w and iy1 >= win_h:  # the window lies inside the image
        # crop first: the filter clamps at the window's edges (a resize ``box`` would read past them)
        if (ix0, iy0, ix1, iy1) != (0, 0, win_w, win_h):
            image = image.crop((-ix0, -iy0, win_w - ix0, win_h - iy0))
        return image.resize((size, size), Image.BILINEAR)
    out = Image.new("RGB", (size, size), filler)
    if ix1 <= 0 or iy1 <= 0 or ix0 >= win_w or iy0 >= win_h:  # no overlap: all filler
        return out
    scale_x, scale_y = size / win_w, size / win_h  # output pixels per source pixel
    support_x, support_y = max(1.0 / scale_x, 1.0), max(1.0 / scale_y, 1.0)  # filter radius, source px
    # output pixels whose filter footprint can touch the image
    ox0 = max(0, math.floor((ix0 - support_x - 1) * scale_x))
    ox1 = min(size, math.ceil((ix1 + support_x + 1) * scale_x))
    oy0 = max(0, math.floor((iy0 - support_y - 1) * scale_y))
    oy1 = min(size, math.ceil((iy1 + support_y + 1) * scale_y))
    # a filler margin around the image wide enough for those pixels' footprints, clipped to the window
    pad_x = math.ceil(2 * support_x + 2 + 1 / scale_x) + 1
    pad_y = math.ceil(2 * support_y + 2 + 1 / scale_y) + 1
    px0, py0 = max(0, ix0 - pad_x), max(0, iy0 - pad_y)
    px1, py1 = min(win_w, ix1 + pad_x), min(win_h, iy1 + pad_y)
    padded = Image.new("RGB", (px1 - px0, py1 - py0), filler)
    # part of the image inside the padded region, in image coordinates
    cx0, cy0 = max(0, px0 - ix0), max(0, py0 - iy0)
    cx1, cy1 = min(width, px1 - ix0), min(height, py1 - iy0)
    part = image if (cx0, cy0, cx1, cy1) == (0, 0, width, height) else image.crop((cx0, cy0, cx1, cy1))
    padded.paste(part, (ix0 + cx0 - px0, iy0 + cy0 - py0))
    box = (ox0 / scale_x - px0, oy0 / scale_y - py0, ox1 / scale_x - px0, oy1 / scale_y - py0)
    tile = padded.resize((ox1 - ox0, oy1 - oy0), Image.BILINEAR, box=box)
    out.paste(tile, (ox0, oy0))
    return out


def train_transform(
    image: Image.Image,
    boxes: np.ndarray,
    labels: np.ndarray,
    difficult: np.ndarray,
    rng: np.random.Generator,
    size: int = 300,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reference training augmentation.

    Args:
        image: RGB PIL image. boxes: float32 (K, 4) pixel xyxy (reference frame). labels (K,),
        difficult (K,).
    Returns:
        (uint8 (size, size, 3) RGB array, float32 (K', 4) fractional xyxy boxes, labels (K',),
        difficult (K',)) with K' <= K the objects kept by the crop.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    image = photometric_distort(image, rng)
    width, height = image.size
    canvas_w, canvas_h, left, top = sample_expand(width, height, rng)
    canvas_boxes = boxes + np.array([left, top, left, top], dtype=np.float32)
    (cx0, cy0, cx1, cy1), keep = sample_crop(canvas_w, canvas_h, canvas_boxes, rng)
    crop = np.array([cx0, cy0, cx1, cy1], dtype=np.float32)
    new_boxes = canvas_boxes[keep]
    new_boxes[:, :2] = np.maximum(new_boxes[:, :2], crop[:2]) - crop[:2]
    new_boxes[:, 2:] = np.minimum(new_boxes[:, 2:], crop[2:]) - crop[:2]
    crop_w, crop_h = cx1 - cx0, cy1 - cy0
    flip = rng.random() < FLIP_P
    pixels = np.asarray(render_window(image, (left, top), (cx0, cy0, cx1, cy1), size))
    if flip:
        pixels = pixels[:, ::-1]
        new_boxes = np.stack(
            [crop_w - new_boxes[:, 2] - 1, new_boxes[:, 1], crop_w - new_boxes[:, 0] - 1, new_boxes[:, 3]], axis=1
        )
    fractional = np.clip(new_boxes / np.array([crop_w, crop_h, crop_w, crop_h], dtype=np.float32), 0.0, 1.0)
    return (
        np.ascontiguousarray(pixels),
        fractional.astype(np.float32).reshape(-1, 4),
        np.asarray(labels)[keep],
        np.asarray(difficult)[keep],
    )


def test_transform(image: Image.Image, boxes: np.ndarray, size: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Resize to size x size (bilinear): (uint8 (size, size, 3) RGB, float32 (K, 4) fractional xyxy boxes)."""
    width, height = image.size
    pixels = np.asarray(image.resize((size, size), Image.BILINEAR))
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    fractional = boxes / np.array([width, height, width, height], dtype=np.float32)
    return np.ascontiguousarray(pixels), fractional.astype(np.float32)
