"""Runtime preprocessing: images (paths, PIL images, arrays) -> the model's input batch (no torch).

Identical to the evaluation transform of training (``ssd_train.augment.test_transform`` followed by
the batch normalization of ``ssd_train.data.Collate``; a test holds them equal):

1. paths are decoded by the one safe loader :func:`ssd_runtime.images.open_image` (JPEG/PNG only,
   EXIF orientation, every mode to 8-bit RGB); PIL images get the same colour conversion
   (:func:`ssd_runtime.images.to_rgb`); arrays must be uint8 RGB ``(H, W, 3)`` (or a batch ``(N, H, W, 3)``);
2. resize to ``input_size x input_size`` by the preprocessing the spec names (``spec.preprocessing``,
   :mod:`ssd_runtime.resize`): our own integer resize, the same pixels whatever the Pillow, NumPy,
   Python version and CPU (:func:`to_model_pixels`, also used by training's evaluation transform);
3. ``float32``: ``x * (1 / (255 * std)) + (-mean / std)`` per channel, ``(N, 3, S, S)`` NCHW.
   For ``uint8-nhwc`` models step 3 is done by the graph and the batch stays uint8 ``(N, S, S, 3)``.

The original ``(width, height)`` of each image is returned so that fractional boxes can be scaled
back to the pixels of the image the caller passed.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ssd_runtime.images import open_image, to_rgb
from ssd_runtime.resize import preprocessing as preprocessing_record
from ssd_runtime.spec import DEFAULT_PREPROCESSING, ModelSpec

__all__ = [
    "INPUT_KINDS", "InputError", "PreparedBatch", "as_image_list", "normalize", "preprocess", "to_model_pixels",
]

#: What a backend takes: float32 (N, 3, S, S) normalized RGB, or uint8 (N, S, S, 3) RGB.
INPUT_KINDS = ("float32-nchw", "uint8-nhwc")

ImageInput = str | os.PathLike | Image.Image | np.ndarray


class InputError(ValueError):
    """An input image (or batch) has a type, shape, dtype or layout the runtime does not take."""


@dataclass
class PreparedBatch:
    """A preprocessed batch: ``pixels`` as the backend takes it and each image's original size.

    pixels: float32 (N, 3, S, S) normalized (``float32-nchw``) or uint8 (N, S, S, 3) (``uint8-nhwc``).
    sizes: (width, height) in pixels of each input image before resizing.
    """

    pixels: np.ndarray
    sizes: list[tuple[int, int]]


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__


def as_image_list(images: ImageInput | Sequence[ImageInput]) -> tuple[list[ImageInput], bool]:
    """Split the accepted input forms into a list of single images; also say whether it was a batch.

    Single: a path (str / PathLike), a PIL image, a uint8 (H, W, 3) array. Batched: a list/tuple of
    those, or a uint8 (N, H, W, 3) array.
    """
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images], False
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images), True
        return [images], False
    if isinstance(images, (list, tuple)):
        return list(images), True
    raise InputError(
        f"expected an image path, a PIL image, a uint8 (H, W, 3) RGB array, a uint8 (N, H, W, 3) batch or a "
        f"list of those; received {_describe(images)}"
    )


def _to_rgb_array(image: ImageInput, index: int) -> np.ndarray:
    """One input -> uint8 RGB (H, W, 3): decoded and colour-converted as the loader does."""
    if isinstance(image, (str, os.PathLike)):
        return np.asarray(open_image(Path(image)))
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            hint = ""
            if image.ndim == 3 and image.shape[0] == 3 and image.shape[2] != 3:
                hint = " (CHW layout? transpose to HWC: array.transpose(1, 2, 0))"
            elif image.dtype != np.uint8 and image.ndim == 3 and image.shape[2] == 3:
                hint = " (float pixels? convert explicitly, e.g. (array * 255).round().clip(0, 255).astype(np.uint8))"
            raise InputError(
                f"image {index}: expected a uint8 RGB array of shape (H, W, 3), received an array of shape "
                f"{image.shape} and dtype {image.dtype}{hint}"
            )
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise InputError(f"image {index}: empty array of shape {image.shape}")
        return image
    raise InputError(
        f"image {index}: expected a path, a PIL image or a uint8 (H, W, 3) RGB array, received {_describe(image)}"
    )


def to_model_pixels(
    image: Image.Image | np.ndarray, size: int, preprocessing: str = DEFAULT_PREPROCESSING
) -> np.ndarray:
    """The model's view of one image: uint8 (size, size, 3) RGB, by the named preprocessing.

    ``image``: a PIL image of any mode (colour-converted by :func:`ssd_runtime.images.to_rgb`) or a
    uint8 RGB (H, W, 3) array. ``preprocessing``: a name of :data:`ssd_runtime.resize.PREPROCESSING`
    (a model's is ``spec.preprocessing``). Every path that feeds a model at evaluation or deployment
    (training's evaluation transform, the runtime, calibration, parity) calls this.
    """
    resize = preprocessing_record(preprocessing).resize
    return resize(_to_rgb_array(image, 0), size)


def normalize(pixels: np.ndarray, spec: ModelSpec, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 (N, S, S, 3) RGB -> float32 (N, 3, S, S): ``x * (1 / (255 std)) + (-mean / std)``.

    The same float32 operations, in the same order, as the training data's batch normalization.
    """
    scale, bias = (x.reshape(1, 3, 1, 1) for x in spec.normalization())
    # (N, S, S, 3) -> (N, 3, S, S) view, converted to float32 in one pass
    chw = pixels.transpose(0, 3, 1, 2)
    if out is None:
        out = np.empty(chw.shape, dtype=np.float32)
    np.multiply(chw, scale, out=out, dtype=np.float32)
    out += bias
    return out


def preprocess(
    images: Sequence[ImageInput], spec: ModelSpec, input_kind: str = "float32-nchw"
) -> PreparedBatch:
    """A list of single images -> :class:`PreparedBatch` for a backend taking ``input_kind``."""
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
    if len(images) == 0:
        raise InputError("no images given: pass at least one image")
    size = spec.input_size
    pixels = np.empty((len(images), size, size, 3), dtype=np.uint8)
    sizes = []
    resize = preprocessing_record(spec.preprocessing).resize
    for i, image in enumerate(images):
        rgb = _to_rgb_array(image, i)
        sizes.append((rgb.shape[1], rgb.shape[0]))
        pixels[i] = resize(rgb, size)
    if input_kind == "uint8-nhwc":
        return PreparedBatch(pixels, sizes)
    return PreparedBatch(normalize(pixels, spec), sizes)
