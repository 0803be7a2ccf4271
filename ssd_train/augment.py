"""The reference SSD300 training augmentation (and the test transform), computed efficiently.

Order, probabilities and ranges follow ``docs/reference.md`` ("Data"):

1. photometric distortion: brightness, contrast, saturation (factors in [0.5, 1.5]) and hue (shift in
   [-18/255, 18/255]) in a random order, each with p = 0.5 (PIL ImageEnhance / HSV, as torchvision's
   PIL backend that the reference calls);
2. zoom-out "expand" with p = 0.5 to a canvas 1-4x the size filled with the ImageNet mean
   (:data:`FILLER`, the reference's ``to_pil_image`` truncation of mean * 255);
3. random crop (min IoU from {0, 0.1, 0.3, 0.5, 0.7, 0.9, no crop}, up to 50 trials per choice, side
   scale 0.3-1, aspect h/w strictly in (0.5, 2), keep boxes whose centre lies strictly inside, at least
   one box reaching the min IoU);
4. horizontal flip with p = 0.5;
5. bilinear resize to ``size`` x ``size`` with fractional boxes (then the caller normalizes).

Efficiency: the expanded canvas (up to 16x the image) is never built. Steps 2-5 are composed into one
window on the virtual canvas; :func:`render_window` resizes only the image part (plus a margin of
filler as wide as the filter support) and pastes it on a filler-coloured output, which gives the same
pixels as resizing the materialised crop (up to fixed-point rounding: at most 2 grey levels, rarely). The flip is
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
from PIL import Image, ImageChops, ImageStat

from ssd_runtime.preprocess import to_model_pixels
from ssd_runtime.spec import DEFAULT_PREPROCESSING


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
#: Training augmentation modes: the reference's; "light" = the reference without the zoom-out (objects
#: keep their size: faster learning in short CPU runs); "flip" = resize and horizontal flip only.
AUGMENTATIONS = ("reference", "light", "flip")


def _blend_lut(base: float, factor: float) -> list[int]:
    """256-entry LUT of PIL's Image.blend(constant base, image, factor): trunc(base + f (v - base)), clipped."""
    values = np.float32(base) + np.float32(factor) * (np.arange(256, dtype=np.float32) - np.float32(base))
    return bytes(np.clip(values, 0, 255).astype(np.uint8)) * 3


def _point(image: Image.Image, lut: bytes) -> Image.Image:
    """``image.point(lut)`` for an integral 8-bit LUT, without Pillow's Python ``round()`` of every entry.

    ``Image.point`` rounds each of the 768 entries in Python before its C call, which cost about 0.8 ms
    of the ~5.6 ms per training sample; the C call itself is the same. Falls back to the public API if
    Pillow's internals ever change.
    """
    core = getattr(image, "im", None)
    if core is None or not hasattr(core, "point") or not hasattr(image, "_new"):
        return image.point(lut)
    image.load()
    return image._new(image.im.point(list(lut), None))


def _brightness(image: Image.Image, factor: float, mean: int | None = None) -> Image.Image:
    """= ImageEnhance.Brightness(image).enhance(factor), as a lookup table."""
    return _point(image, _blend_lut(0.0, factor))


def _contrast(image: Image.Image, factor: float, mean: int | None = None) -> Image.Image:
    """= ImageEnhance.Contrast(image).enhance(factor); ``mean`` (of the L image) may be given."""
    if mean is None:
        mean = _gray_mean(image)
    return _point(image, _blend_lut(float(mean), factor))


def _saturation(image: Image.Image, factor: float, mean: int | None = None) -> Image.Image:
    """= ImageEnhance.Color(image).enhance(factor): blend with the grey (L) image."""
    gray = image.convert("L")
    return Image.blend(Image.merge("RGB", (gray, gray, gray)), image, factor)


# out_c = v * (1 - s/255 * W_c(h)) for PIL's six HSV sectors; W_c tabulated on the 256 hue codes
_HUE_CODES = np.arange(256) * 6.0 / 255.0
_SECTOR, _FRAC = np.floor(_HUE_CODES).astype(int) % 6, _HUE_CODES - np.floor(_HUE_CODES)
_ONE, _ZERO = np.ones(256), np.zeros(256)
_HUE_PROFILES = (
    np.choose(_SECTOR, [_ZERO, _FRAC, _ONE, _ONE, 1 - _FRAC, _ZERO]),
    np.choose(_SECTOR, [1 - _FRAC, _ZERO, _ZERO, _FRAC, _ONE, _ONE]),
    np.choose(_SECTOR, [_ONE, _ONE, 1 - _FRAC, _ZERO, _ZERO, _FRAC]),
)


def _hue(image: Image.Image, factor: float, mean: int | None = None) -> Image.Image:
    """HSV hue shift by int(factor * 255) codes (mod 256), as torchvision's PIL ``adjust_hue``.

    PIL's HSV -> RGB conversion is slow, so the way back is rebuilt from per-channel lookup tables and
    ImageChops (within 2 grey levels of PIL's own round trip, which itself moves pixels by up to 6).
    """
    shift = int(factor * 255) % 256
    h, s, v = image.convert("HSV").split()
    channels = []
    for profile in _HUE_PROFILES:
        weight = _point(h, bytes(np.rint(255 * np.roll(profile, -shift)).astype(np.uint8)))
        channels.append(ImageChops.subtract(v, ImageChops.multiply(v, ImageChops.multiply(s, weight))))
    return Image.merge("RGB", channels)


def _gray_mean(image: Image.Image) -> int:
    """The rounded mean of the L image, as ImageEnhance.Contrast computes it."""
    return int(ImageStat.Stat(image.convert("L")).mean[0] + 0.5)


_DISTORTIONS = {"brightness": _brightness, "contrast": _contrast, "saturation": _saturation, "hue": _hue}
_ORDER = ("brightness", "contrast", "saturation", "hue")
#: Side reduction of the copy the contrast mean is measured on in the fast path.
CONTRAST_MEAN_REDUCE = 4

PhotometricPlan = list[tuple[str, float]]


def sample_photometric(rng: np.random.Generator) -> PhotometricPlan:
    """Reference draws: a random order of the four ops, each kept with p = 0.5 with its factor."""
    plan = []
    for op_index in rng.permutation(len(_ORDER)):
        name = _ORDER[op_index]
        if rng.random() < PHOTOMETRIC_P:
            if name == "hue":
                plan.append((name, float(rng.uniform(-HUE_SHIFT, HUE_SHIFT))))
            else:
                plan.append((name, float(rng.uniform(*FACTOR_RANGE))))
    return plan


def apply_photometric(image: Image.Image, plan: PhotometricPlan, contrast_mean: int | None = None) -> Image.Image:
    """Apply a photometric plan to an RGB PIL image; ``contrast_mean`` overrides the image's own mean."""
    for name, factor in plan:
        image = _DISTORTIONS[name](image, factor, contrast_mean if name == "contrast" else None)
    return image


def contrast_mean(image: Image.Image, plan: PhotometricPlan, reduce: int = CONTRAST_MEAN_REDUCE) -> int | None:
    """The grey mean the contrast op of ``plan`` sees (after the ops before it), on a reduced copy."""
    names = [name for name, _ in plan]
    if "contrast" not in names:
        return None
    before = plan[: names.index("contrast")]
    small = image.reduce(reduce) if reduce > 1 and min(image.size) >= 4 * reduce else image
    return _gray_mean(apply_photometric(small, before))


def photometric_distort(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Reference photometric distortion of a full RGB PIL image (random order, each op with p = 0.5)."""
    return apply_photometric(image, sample_photometric(rng))


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
    strictly inside the crop. "No crop" returns the full canvas and keeps every box. The 50 trials of
    one min-IoU choice are drawn and tested at once; the first trial that passes is taken, as the
    reference's loop would (same distribution, one NumPy pass instead of 50).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    num_boxes = boxes.shape[0]
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while True:
        min_iou = CROP_MIN_IOUS[int(rng.integers(len(CROP_MIN_IOUS)))]
        if min_iou is None:
            return (0, 0, width, height), np.ones(num_boxes, dtype=bool)
        draws = rng.random((CROP_TRIALS, 4))  # scale_h, scale_w, left, top (uniform [0, 1))
        new_h = (CROP_MIN_SCALE + (1 - CROP_MIN_SCALE) * draws[:, 0]) * height
        new_w = (CROP_MIN_SCALE + (1 - CROP_MIN_SCALE) * draws[:, 1]) * width
        new_h, new_w = new_h.astype(np.int64), new_w.astype(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            aspect = new_h / new_w
        ok = (new_w > 0) & (aspect > CROP_ASPECT[0]) & (aspect < CROP_ASPECT[1])
        left = np.floor(draws[:, 2] * (width - new_w + 1)).astype(np.int64)  # randint(0, width - new_w)
        top = np.floor(draws[:, 3] * (height - new_h + 1)).astype(np.int64)
        right, bottom = left + new_w, top + new_h
        if num_boxes == 0:
            passed = ok
            keep = np.zeros((CROP_TRIALS, 0), dtype=bool)
        else:
            # (T, K) IoU of each trial crop with each box, and centres strictly inside
            iw = np.clip(np.minimum(right[:, None], boxes[None, :, 2]) - np.maximum(left[:, None], boxes[None, :, 0]), 0, None)
            ih = np.clip(np.minimum(bottom[:, None], boxes[None, :, 3]) - np.maximum(top[:, None], boxes[None, :, 1]), 0, None)
            inter = iw * ih
            union = (new_w * new_h)[:, None] + areas[None, :] - inter
            overlap = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
            keep = (
                (centers[None, :, 0] > left[:, None]) & (centers[None, :, 0] < right[:, None])
                & (centers[None, :, 1] > top[:, None]) & (centers[None, :, 1] < bottom[:, None])
            )  # fmt: skip
            passed = ok & (overlap.max(axis=1) >= min_iou) & keep.any(axis=1)
        hits = np.flatnonzero(passed)
        if hits.size:
            t = int(hits[0])
            return (int(left[t]), int(top[t]), int(right[t]), int(bottom[t])), keep[t]


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


def _crop_boxes(canvas_boxes: np.ndarray, window: tuple[int, int, int, int], keep: np.ndarray) -> np.ndarray:
    """Reference crop of pixel boxes: keep, clamp to the window, shift to its origin."""
    crop = np.array(window, dtype=np.float32)
    new_boxes = canvas_boxes[keep]
    new_boxes[:, :2] = np.maximum(new_boxes[:, :2], crop[:2]) - crop[:2]
    new_boxes[:, 2:] = np.minimum(new_boxes[:, 2:], crop[2:]) - crop[:2]
    return new_boxes


def _finish_boxes(boxes: np.ndarray, crop_w: int, crop_h: int, flip: bool) -> np.ndarray:
    """Flip (x -> W - 1 - x, reference convention) and divide by the crop size; clip to [0, 1]."""
    if flip:
        boxes = np.stack([crop_w - boxes[:, 2] - 1, boxes[:, 1], crop_w - boxes[:, 0] - 1, boxes[:, 3]], axis=1)
    fractional = boxes / np.array([crop_w, crop_h, crop_w, crop_h], dtype=np.float32)
    return np.clip(fractional, 0.0, 1.0).astype(np.float32).reshape(-1, 4)


def train_transform(
    image: Image.Image,
    boxes: np.ndarray,
    labels: np.ndarray,
    difficult: np.ndarray,
    rng: np.random.Generator,
    size: int = 300,
    mode: str = "reference",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reference training augmentation, fast path (``mode`` picks a lighter one, see :data:`AUGMENTATIONS`).

    The random draws happen in the reference's order (photometric, expand, crop, flip). The
    geometry is rendered first (:func:`render_window`, no canvas) and the photometric plan is then
    applied to the ``size`` x ``size`` result: the ops are per-pixel, so they commute with crop and
    flip, and with the bilinear resize up to clipping at 0/255 and hue's non-linearity at colour
    edges; the contrast op's mean is that of the whole distorted image (measured on a 4x-reduced
    copy), and the zoom-out filler is restored so that it stays undistorted as in the reference.
    The literal version (materialised canvas, full-size distortion) lives beside the tests
    (``tests/helpers/augment_reference.py``); a test holds the two close.

    Args:
        image: RGB PIL image. boxes: float32 (K, 4) pixel xyxy (reference frame). labels (K,),
        difficult (K,).
    Returns:
        (uint8 (size, size, 3) RGB array, float32 (K', 4) fractional xyxy boxes, labels (K',),
        difficult (K',)) with K' <= K the objects kept by the crop.
    """
    if mode not in AUGMENTATIONS:
        raise ValueError(f"augmentation mode must be one of {AUGMENTATIONS}, got {mode!r}")
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    plan = sample_photometric(rng) if mode != "flip" else []
    mean = contrast_mean(image, plan)
    width, height = image.size
    canvas_w, canvas_h, left, top = sample_expand(width, height, rng) if mode == "reference" else (width, height, 0, 0)
    canvas_boxes = boxes + np.array([left, top, left, top], dtype=np.float32)
    if mode == "flip":
        window, keep = (0, 0, width, height), np.ones(len(boxes), dtype=bool)
    else:
        window, keep = sample_crop(canvas_w, canvas_h, canvas_boxes, rng)
    flip = rng.random() < FLIP_P
    new_boxes = _crop_boxes(canvas_boxes, window, keep)
    crop_w, crop_h = window[2] - window[0], window[3] - window[1]

    rendered = render_window(image, (left, top), window, size)
    if plan:
        # distort only the output pixels that see the image: the filler stays undistorted, as in the
        # reference (which distorts before expanding), and a zoomed-out image costs only its own area
        sx, sy = size / crop_w, size / crop_h
        ox0 = min(size, max(0, math.floor((left - window[0]) * sx)))
        oy0 = min(size, max(0, math.floor((top - window[1]) * sy)))
        ox1 = min(size, max(0, math.ceil((left + width - window[0]) * sx)))
        oy1 = min(size, max(0, math.ceil((top + height - window[1]) * sy)))
        if (ox0, oy0, ox1, oy1) == (0, 0, size, size):
            rendered = apply_photometric(rendered, plan, mean)
        elif ox1 > ox0 and oy1 > oy0:
            rendered.paste(apply_photometric(rendered.crop((ox0, oy0, ox1, oy1)), plan, mean), (ox0, oy0))
    if flip:
        rendered = rendered.transpose(Image.FLIP_LEFT_RIGHT)
    return (
        np.array(rendered),
        _finish_boxes(new_boxes, crop_w, crop_h, flip),
        np.asarray(labels)[keep],
        np.asarray(difficult)[keep],
    )


def test_transform(
    image: Image.Image, boxes: np.ndarray, size: int = 300, preprocessing: str = DEFAULT_PREPROCESSING
) -> tuple[np.ndarray, np.ndarray]:
    """The model's view of an image: (uint8 (size, size, 3) RGB, float32 (K, 4) fractional xyxy boxes).

    The pixels are the runtime's (:func:`ssd_runtime.preprocess.to_model_pixels` with the model's
    ``preprocessing``), so evaluation and deployment see one "image at size x size"; the training
    augmentation above keeps Pillow's resize.
    """
    width, height = image.size
    pixels = to_model_pixels(image, size, preprocessing)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    fractional = boxes / np.array([width, height, width, height], dtype=np.float32)
    return pixels, fractional.astype(np.float32)
