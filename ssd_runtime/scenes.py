"""Generated scenes: shapes of :data:`CLASSES` drawn on clutter, each a pure function of ``(seed, index)``.

NumPy and Pillow only (no torch), so that everything that draws a scene runs where the runtime runs:
``ssd-train data`` (:mod:`ssd_train.synthetic`) writes them as a Pascal-VOC-format dataset, and
:mod:`ssd_export.parity` feeds them, at a seed no training uses, to every artifact it checks (a TensorRT
engine checked on a Jetson without torch included).

What a scene holds:

- a VOC-sized RGB image: the longer side 500 px, the shorter 300-500 px, landscape or portrait;
- :data:`CLASSES`: 7 shapes (circle, square, triangle, star, cross, ring, crescent), rotated and
  stretched, each with a preferred colour family (hue jittered +-50 degrees, 20% of objects take any
  hue, so colours overlap between classes) and textures (solid, stripes, checker, gradient) drawn from
  a per-class mix: shape decides, appearance helps.
- 1-6 objects per image, side from 2% to 90% of the shorter image side (12% tiny, the rest
  log-uniform from 8%); objects overlap and occlude each other (boxes up to IoU 0.5), some run off
  the edge (``truncated``). The box is the tight box of the *visible* pixels, as VOC annotates.
- Cluttered backgrounds: a smooth colour field, fine noise and 6-30 distractors (lines, arcs,
  irregular blobs and polygons, dots) that are none of the classes.
- ``difficult`` for tiny objects (visible box side < 4.5% of the shorter side) and heavily occluded
  ones (< 35% of the shape visible); objects with almost no visible pixel (a visible box under 3
  pixels wide or high) are not annotated.

Changing what :func:`render_image` draws changes the generated dataset: bump
``ssd_train.synthetic.GENERATOR_VERSION`` with it.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["CLASSES", "SyntheticObject", "noise_tile", "render_image"]

#: Object classes of the scenes (a model's class list puts the background before them).
CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring", "crescent")

# class -> (hue in degrees, texture weights for solid, stripes, checker, gradient)
_APPEARANCE = {
    "circle": (0, (0.5, 0.1, 0.1, 0.3)),
    "square": (220, (0.3, 0.4, 0.1, 0.2)),
    "triangle": (120, (0.4, 0.1, 0.4, 0.1)),
    "star": (52, (0.5, 0.1, 0.1, 0.3)),
    "cross": (285, (0.3, 0.3, 0.3, 0.1)),
    "ring": (185, (0.6, 0.1, 0.1, 0.2)),
    "crescent": (28, (0.4, 0.1, 0.1, 0.4)),
}
_TEXTURES = ("solid", "stripes", "checker", "gradient")
_TINY_P = 0.12
_TINY_SCALE = (0.02, 0.07)
_SCALE = (0.08, 0.9)
_NUM_OBJECTS_P = (0.25, 0.25, 0.2, 0.15, 0.1, 0.05)  # 1..6 objects
_MAX_PAIR_IOU = 0.5
_TRUNCATE_P = 0.15
_DIFFICULT_SIDE = 0.045
_DIFFICULT_VISIBLE = 0.35
#: Objects whose visible box spans fewer pixels (xmax - xmin, 1-based inclusive) are not annotated:
#: the reference frame (VOC - 1 on all four) would make a 1-pixel sliver an empty box.
_MIN_VISIBLE_SPAN = 2


@dataclass(frozen=True)
class SyntheticObject:
    """One annotated object: class name, 1-based inclusive VOC pixel box, flags."""

    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    difficult: bool
    truncated: bool


def _color(hue_deg: float, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 colour of the given hue with random saturation/value."""
    s = rng.uniform(0.45, 1.0)
    v = rng.uniform(0.45, 1.0)
    r, g, b = colorsys.hsv_to_rgb((hue_deg % 360) / 360.0, s, v)
    return np.array([r * 255, g * 255, b * 255], dtype=np.float32)


def _texture(name: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """float32 (h, w, 3) texture of an object of class ``name``."""
    hue, weights = _APPEARANCE[name]
    hue = rng.uniform(0, 360) if rng.random() < 0.2 else hue + rng.uniform(-50, 50)
    base = _color(hue, rng)
    second = _color(hue + rng.uniform(-40, 40), rng) * rng.uniform(0.4, 0.8)
    kind = _TEXTURES[int(rng.choice(4, p=weights))]
    if kind == "solid":
        return np.broadcast_to(base, (h, w, 3))
    ys, xs = np.ogrid[0:h, 0:w]
    if kind == "stripes":
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(4, 12)
        phase = (xs * math.cos(angle) + ys * math.sin(angle)) / period
        t = (np.floor(phase) % 2).astype(np.float32)
    elif kind == "checker":
        cell = int(rng.integers(3, 10))
        t = ((xs // cell + ys // cell) % 2).astype(np.float32)
    else:  # gradient
        angle = rng.uniform(0, 2 * math.pi)
        proj = xs * math.cos(angle) + ys * math.sin(angle)
        t = ((proj - proj.min()) / max(float(np.ptp(proj)), 1.0)).astype(np.float32)
    return base + (second - base) * t[:, :, None]


def _polygon(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit vertices (V, 2) of a polygonal class, before rotation."""
    if kind == "square":
        angles = np.array([0.25, 0.75, 1.25, 1.75]) * math.pi
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if kind == "triangle":
        angles = np.array([0.5, 0.5 + 2 / 3, 0.5 + 4 / 3]) * math.pi
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if kind == "star":
        points = int(rng.integers(5, 7))
        inner = rng.uniform(0.38, 0.5)
        angles = np.arange(2 * points) * math.pi / points
        radius = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
        return np.stack([radius * np.cos(angles), radius * np.sin(angles)], 1)
    if kind == "cross":
        a = rng.uniform(0.22, 0.36)
        return np.array(
            [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)],
            dtype=np.float64,
        )
    raise ValueError(kind)


def _mask(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """bool (h, w) silhouette of a class filling its w x h box."""
    image = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(image)
    if kind in ("circle", "ring", "crescent"):
        draw.ellipse((0, 0, w - 1, h - 1), fill=255)
        if kind == "ring":
            t = rng.uniform(0.22, 0.34)
            draw.ellipse((t * w, t * h, (1 - t) * w - 1, (1 - t) * h - 1), fill=0)
        elif kind == "crescent":
            angle = rng.uniform(0, 2 * math.pi)
            shift = rng.uniform(0.3, 0.45)
            dx, dy = shift * w * math.cos(angle), shift * h * math.sin(angle)
            draw.ellipse((dx, dy, w - 1 + dx, h - 1 + dy), fill=0)
    else:
        vertices = _polygon(kind, rng)
        angle = rng.uniform(0, 2 * math.pi)
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        vertices = vertices @ rot.T
        lo, hi = vertices.min(0), vertices.max(0)
        vertices = (vertices - lo) / (hi - lo) * np.array([w - 1, h - 1])
        draw.polygon([tuple(v) for v in vertices], fill=255)
    return np.asarray(image) > 127


def _background(width: int, height: int, rng: np.random.Generator, noise: np.ndarray) -> Image.Image:
    """Smooth colour field + fine noise + distractor clutter."""
    cells = rng.integers(0, 256, size=(int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3), dtype=np.uint8)
    field = Image.fromarray(cells, "RGB").resize((width, height), Image.BILINEAR)
    ox, oy = int(rng.integers(0, noise.shape[1] - width + 1)), int(rng.integers(0, noise.shape[0] - height + 1))
    pixels = np.asarray(field).astype(np.int16) + noise[oy : oy + height, ox : ox + width]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    side = min(width, height)
    for _ in range(int(rng.integers(6, 31))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.random()
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = side * math.exp(rng.uniform(math.log(0.02), math.log(0.3)))
        if kind < 0.3:  # line
            a = rng.uniform(0, 2 * math.pi)
            draw.line((cx, cy, cx + 2 * r * math.cos(a), cy + 2 * r * math.sin(a)), fill=color, width=int(rng.integers(1, 7)))
        elif kind < 0.5:  # arc
            start = rng.uniform(0, 360)
            draw.arc((cx - r, cy - r, cx + r, cy + r), start, start + rng.uniform(60, 200), fill=color, width=int(rng.integers(1, 5)))
        elif kind < 0.85:  # irregular blob / polygon (not a class shape: random radii)
            n = int(rng.integers(5, 11))
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            radii = r * rng.uniform(0.3, 1.0, n)
            draw.polygon([(cx + rr * math.cos(a), cy + rr * math.sin(a)) for a, rr in zip(angles, radii)], fill=color)
        else:  # dots
            for _ in range(int(rng.integers(3, 12))):
                x, y = rng.uniform(0, width), rng.uniform(0, height)
                d = rng.uniform(1, 4)
                draw.ellipse((x - d, y - d, x + d, y + d), fill=color)
    return image


def noise_tile(seed: int) -> np.ndarray:
    """int16 (520, 520, 3) fine noise shared by all images of a dataset (sliced at random offsets)."""
    return np.random.default_rng([seed, 0xB0B]).normal(0, 6, size=(520, 520, 3)).round().astype(np.int16)


def _box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def render_image(seed: int, index: int, noise: np.ndarray | None = None) -> tuple[Image.Image, list[SyntheticObject]]:
    """Scene ``index`` of ``seed``: (RGB PIL image of 500 x 300-500 pixels, annotated objects in drawing order).

    ``noise``: :func:`noise_tile` of ``seed``, to reuse across the scenes of one seed (made here when None).
    Objects' boxes are 1-based inclusive VOC pixels of the visible part.
    """
    rng = np.random.default_rng([seed, index])
    noise = noise_tile(seed) if noise is None else noise
    if rng.random() < 0.75:
        width, height = 500, int(rng.integers(300, 501))
    else:
        width, height = int(rng.integers(330, 500)), 500
    image = _background(width, height, rng, noise)
    canvas = np.array(image)  # (H, W, 3) uint8
    owner = np.full((height, width), -1, dtype=np.int16)
    side = min(width, height)

    # sample objects (name, w, h), larger ones first (with some swaps so small ones get occluded too)
    count = 1 + int(rng.choice(len(_NUM_OBJECTS_P), p=_NUM_OBJECTS_P))
    specs = []
    for _ in range(count):
        name = CLASSES[int(rng.integers(len(CLASSES)))]
        if rng.random() < _TINY_P:
            scale = rng.uniform(*_TINY_SCALE)
        else:
            scale = math.exp(rng.uniform(math.log(_SCALE[0]), math.log(_SCALE[1])))
        aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.6)))
        w = max(4, min(width, int(round(scale * side * math.sqrt(aspect)))))
        h = max(4, min(height, int(round(scale * side / math.sqrt(aspect)))))
        specs.append((name, w, h))
    specs.sort(key=lambda s: -s[1] * s[2])
    for i in range(len(specs) - 1):
        if rng.random() < 0.25:
            specs[i], specs[i + 1] = specs[i + 1], specs[i]

    placed: list[tuple[int, int, int, int]] = []
    drawn = []  # (name, full box in image, mask area, truncated)
    for name, w, h in specs:
        box = None
        for _ in range(20):
            if rng.random() < _TRUNCATE_P:  # may run off an edge
                x0 = int(rng.integers(-w // 3, width - w + w // 3 + 1))
                y0 = int(rng.integers(-h // 3, height - h + h // 3 + 1))
            else:
                x0 = int(rng.integers(0, width - w + 1))
                y0 = int(rng.integers(0, height - h + 1))
            candidate = (x0, y0, x0 + w, y0 + h)
            if all(_box_iou(candidate, other) <= _MAX_PAIR_IOU for other in placed):
                box = candidate
                break
        if box is None:
            continue
        placed.append(box)
        mask = _mask(name, w, h, rng)
        texture = _texture(name, w, h, rng)
        # clip the object's box to the image
        x0, y0, x1, y1 = box
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        sub_mask = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        sub_tex = texture[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        region = canvas[cy0:cy1, cx0:cx1]
        region[sub_mask] = np.clip(sub_tex[sub_mask], 0, 255).astype(np.uint8)
        owner[cy0:cy1, cx0:cx1][sub_mask] = len(drawn)
        truncated = (cx0, cy0, cx1, cy1) != box
        drawn.append((name, (cx0, cy0, cx1, cy1), int(mask.sum()), truncated))

    objects = []
    for k, (name, (cx0, cy0, cx1, cy1), area, truncated) in enumerate(drawn):
        visible = owner[cy0:cy1, cx0:cx1] == k
        count_visible = int(visible.sum())
        if count_visible == 0:
            continue
        rows = np.flatnonzero(visible.any(axis=1))
        cols = np.flatnonzero(visible.any(axis=0))
        vx0, vx1 = cx0 + int(cols[0]), cx0 + int(cols[-1])  # inclusive 0-based pixel indices
        vy0, vy1 = cy0 + int(rows[0]), cy0 + int(rows[-1])
        if min(vx1 - vx0, vy1 - vy0) < _MIN_VISIBLE_SPAN:  # a sliver: empty in the reference's frame
            continue
        tiny = min(vx1 - vx0 + 1, vy1 - vy0 + 1) < _DIFFICULT_SIDE * side
        occluded = count_visible < _DIFFICULT_VISIBLE * area
        objects.append(SyntheticObject(name, vx0 + 1, vy0 + 1, vx1 + 1, vy1 + 1, tiny or occluded, truncated))
    return Image.fromarray(canvas, "RGB"), objects
