"""Torch box ops for training: re-exported from ``ssd_runtime.boxes_torch`` (one implementation)."""
from __future__ import annotations

from ssd_runtime.boxes_torch import (
    CENTER_VARIANCE,
    SIZE_VARIANCE,
    VARIANCES,
    box_area,
    clip,
    cxcywh_to_xyxy,
    decode,
    encode,
    iou,
    xyxy_to_cxcywh,
)

__all__ = [
    "CENTER_VARIANCE", "SIZE_VARIANCE", "VARIANCES",
    "xyxy_to_cxcywh", "cxcywh_to_xyxy", "encode", "decode", "box_area", "iou", "clip",
]  # fmt: skip
