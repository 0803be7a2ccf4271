"""Draw detections on an image with Pillow only (its built-in default font: no font file needed).

Uses the Pillow >= 10 text API (``ImageDraw.textbbox``; ``font.getsize`` no longer exists).
"""
from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from ssd_runtime.detections import ImageDetections

__all__ = ["color_for", "draw_detections", "draw_label"]

# distinct, saturated colours (Tableau 10), cycled by class index
_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def color_for(label: int) -> tuple[int, int, int]:
    """The RGB colour of a class index."""
    return _PALETTE[(int(label) - 1) % len(_PALETTE)]


def draw_detections(image: Image.Image, detections: ImageDetections, *, line_width: int | None = None) -> Image.Image:
    """A copy of ``image`` (RGB) with each detection's box and "name score" label drawn on it.

    Boxes are in the image's pixels (as :meth:`Detector.detect` returns them); parts outside the
    image are clipped by the drawing.
    """
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    width = line_width or max(1, round(min(canvas.size) / 200))
    # draw the lowest scores first so the best detections stay on top
    for k in reversed(range(len(detections))):
        x0, y0, x1, y1 = (float(v) for v in detections.boxes[k])
        color = color_for(detections.labels[k])
        draw.rectangle((x0, y0, x1, y1), outline=color, width=width)
        text = f"{detections.class_names[k]} {float(detections.scores[k]):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tx = min(max(x0, 0.0), max(canvas.size[0] - (right - left) - 2, 0))
        ty = y0 - (bottom - top) - 4 if y0 - (bottom - top) - 4 >= 0 else max(y0, 0.0)
        draw_label(canvas, text, (tx, ty), color, draw=draw, font=font)
    return canvas


def draw_label(image: Image.Image, text: str, xy: tuple[float, float], color: tuple[int, int, int] = (0, 0, 0), *,
               draw: ImageDraw.ImageDraw | None = None, font: ImageFont.ImageFont | None = None) -> None:
    """Draw ``text`` in white on a ``color`` box whose top-left corner is ``xy`` (pixels), in place."""
    draw = draw or ImageDraw.Draw(image)
    font = font or ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tx, ty = xy
    draw.rectangle((tx, ty, tx + (right - left) + 4, ty + (bottom - top) + 4), fill=color)
    draw.text((tx + 2 - left, ty + 2 - top), text, fill=(255, 255, 255), font=font)
