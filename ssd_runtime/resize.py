"""The model's resize: uint8 RGB (H, W, 3) -> uint8 (S, S, 3), the same pixels on every stack (no torch).

One function, named in the model spec (``ModelSpec.preprocessing``), used by training's evaluation
transform, the runtime's preprocess, calibration, deploy and the parity checks. Why our own and not
Pillow's ``Image.resize(BILINEAR)``: Pillow 12.3 and 13.0 give other pixels for the same image and
call (measured on the session's test images: see docs/reference.md "Preprocessing" and
``benchmarks/resize.py``), and a model fed other pixels than the ones its parity checks and deploy
report were computed on scores differently (+0.23 mAP points on the main job's model).

The filter is Pillow's bilinear (a triangle filter widened by the scale when shrinking, so it
antialiases), computed in exact integer arithmetic:

* for output index ``i`` of ``out`` and input index ``j`` of ``inp``, with ``D = 2 max(inp, out)``,
  the weight numerator is ``n_ij = max(0, D - |(2j + 1) out - (2i + 1) inp|)`` (the triangle
  ``1 - |x|`` at the distance between pixel centres, in units of ``1 / D``);
* each coefficient is ``c_ij = floor(n_ij 2**22 / sum_j n_ij + 1/2)`` (22 fractional bits, Pillow's
  ``PRECISION_BITS`` for 8-bit images);
* a pass computes ``clamp((sum_j c_ij p_j + 2**21) >> 22, 0, 255)``; the horizontal pass runs first
  and its uint8 result feeds the vertical pass. A pass whose size does not change is skipped (its
  coefficients are the identity).

Everything is int32 integer arithmetic in NumPy (no float, no BLAS), so NumPy version, CPU and SIMD
path cannot change a pixel. The largest sum is ``255 * (2**22 + taps) + 2**21 < 2**31``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "PRECISION_BITS", "PREPROCESSING", "Preprocessing", "ResizeError", "preprocessing", "resize_coefficients",
    "resize_rgb",
]

#: Fractional bits of the fixed-point coefficients (Pillow's ``PRECISION_BITS`` for 8-bit images).
PRECISION_BITS = 22


class ResizeError(ValueError):
    """An image or size the resize does not take."""


@dataclass(frozen=True)
class Preprocessing:
    """One versioned definition of "the image at S x S", as named in the model spec.

    name: the value of ``ModelSpec.preprocessing``.
    description: what it does, for error messages and docs.
    resize: uint8 RGB (H, W, 3), size -> uint8 (size, size, 3).
    """

    name: str
    description: str
    resize: Callable[[np.ndarray, int], np.ndarray]


@lru_cache(maxsize=64)
def resize_coefficients(inp: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Taps of a 1-D resize from ``inp`` to ``out`` pixels, computed in Python integers once per size pair.

    Returns ``(start, coeff)``: int32 ``(out,)`` and int32 ``(out, taps)``. Output ``i`` is
    ``sum_k coeff[i, k] * p[start[i] + k]`` in units of ``2**-22``; every window lies inside the
    input (``start[i] + taps <= inp``), taps outside the triangle have coefficient 0.
    """
    if inp < 1 or out < 1:
        raise ResizeError(f"resize sizes must be at least 1 pixel, got {inp} -> {out}")
    half_width = 2 * max(inp, out)  # D: the triangle's half-width, in units of 1 / (2 out) input pixels
    one = 1 << PRECISION_BITS
    rows: list[tuple[int, list[int]]] = []
    for i in range(out):
        centre = (2 * i + 1) * inp  # the output pixel's centre, in units of 1 / (2 out) input pixels
        # input pixels whose centre lies strictly inside the triangle: |(2j + 1) out - centre| < D
        first = max(0, (centre - half_width) // (2 * out))
        last = min(inp - 1, (centre + half_width) // (2 * out))
        numerators = [max(0, half_width - abs((2 * j + 1) * out - centre)) for j in range(first, last + 1)]
        total = sum(numerators)
        # round half up, as Pillow's (int)(0.5 + k * (1 << PRECISION_BITS)) for k >= 0
        rows.append((first, [(2 * n * one + total) // (2 * total) for n in numerators]))
    taps = max(len(c) for _, c in rows)  # <= inp: a window never holds more pixels than the input
    start = np.empty(out, dtype=np.int32)
    coeff = np.zeros((out, taps), dtype=np.int32)
    for i, (first, coeffs) in enumerate(rows):
        start[i] = min(first, inp - taps)  # a window near the end starts earlier ...
        shift = first - start[i]
        coeff[i, shift : shift + len(coeffs)] = coeffs  # ... and its taps move right
    start.flags.writeable = False
    coeff.flags.writeable = False
    return start, coeff


def _pass(pixels: np.ndarray, out: int) -> np.ndarray:
    """One separable pass along axis 0: uint8 (N, M, 3) -> uint8 (out, M, 3)."""
    start, coeff = resize_coefficients(pixels.shape[0], out)
    taps = coeff.shape[1]
    # (N, M, 3) -> (N, M*3) int32, then windows (N - taps + 1, M*3, taps) as a view, gathered (out, M*3, taps)
    flat = pixels.reshape(pixels.shape[0], -1).astype(np.int32)
    windows = sliding_window_view(flat, taps, axis=0)[start]
    # integer sum of products: exact in any order, so no NumPy version or SIMD path can change it.
    # einsum: 2.9 ms per VOC-sized image against 3.5 ms for a loop over taps and 4.3 ms for matmul
    # (AMD EPYC, one thread, benchmarks/resize.py)
    acc = np.einsum("omk,ok->om", windows, coeff)
    acc += 1 << (PRECISION_BITS - 1)
    acc >>= PRECISION_BITS
    np.clip(acc, 0, 255, out=acc)
    return acc.astype(np.uint8).reshape((out,) + pixels.shape[1:])


def resize_rgb(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 (size, size, 3) by ``rgb8-bilinear-q22-v1`` (see the module docstring).

    An image already ``size x size`` is returned as a copy.
    """
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        got = f"{pixels.shape} {pixels.dtype}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise ResizeError(f"resize takes a uint8 RGB array of shape (H, W, 3), got {got}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ResizeError(f"resize: the output size must be a whole number of pixels >= 1, got {size!r}")
    height, width = pixels.shape[:2]
    if height < 1 or width < 1:
        raise ResizeError(f"resize: empty image of shape {pixels.shape}")
    out = pixels
    if width != size:
        # horizontal first, as Pillow: columns become rows of the transposed image, (W, H, 3)
        out = _pass(np.ascontiguousarray(out.transpose(1, 0, 2)), size).transpose(1, 0, 2)
    if height != size:
        out = _pass(np.ascontiguousarray(out), size)
    return np.array(out, order="C", copy=True) if out is pixels else np.ascontiguousarray(out)


#: The table of preprocessing definitions this toolkit implements, one record per name. A change
#: that can move a pixel is a new name, never an edit of an existing one.
PREPROCESSING: dict[str, Preprocessing] = {
    "rgb8-bilinear-q22-v1": Preprocessing(
        "rgb8-bilinear-q22-v1",
        "8-bit RGB; separable antialiased bilinear (triangle) resize, horizontal then vertical, "
        "22-bit fixed-point integer coefficients, uint8 between the passes",
        resize_rgb,
    ),
}


def preprocessing(name: str) -> Preprocessing:
    """The record of ``name``; :class:`ResizeError` (saying what this toolkit knows) for another name."""
    try:
        return PREPROCESSING[name]
    except KeyError:
        raise ResizeError(
            f"preprocessing {name!r} is not implemented by this toolkit (it knows {sorted(PREPROCESSING)}); "
            "upgrade ssd300 to the version that wrote the model"
        ) from None
