"""Box geometry in NumPy: conversions, SSD encode/decode, IoU, clipping.

All functions take arrays shaped [..., 4]. Boxes are fractional (0-1 of the image side) unless a
caller says otherwise; ``xyxy`` is (x_min, y_min, x_max, y_max), ``cxcywh`` is (cx, cy, w, h).
The torch twins live in ``ssd_runtime.boxes_torch`` (same names and signatures; ``ssd_train.boxes``
re-exports them for training code); ``tests/ssd_train/test_boxes_torch.py`` holds the two equal.
"""
from __future__ import annotations

import numpy as np

#: Variances of the SSD box coding: centre offsets are divided by 0.1 * prior size, log sizes by 0.2.
CENTER_VARIANCE = 0.1
SIZE_VARIANCE = 0.2
VARIANCES = (CENTER_VARIANCE, SIZE_VARIANCE)


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """(x_min, y_min, x_max, y_max) -> (cx, cy, w, h), [..., 4]."""
    boxes = np.asarray(boxes)
    return np.concatenate(
        [(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], axis=-1
    )


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h) -> (x_min, y_min, x_max, y_max), [..., 4]."""
    boxes = np.asarray(boxes)
    return np.concatenate(
        [boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], axis=-1
    )


def encode(
    boxes_cxcywh: np.ndarray, priors_cxcywh: np.ndarray, variances: tuple[float, float] = VARIANCES
) -> np.ndarray:
    """Boxes (cx, cy, w, h) -> offsets (g_cx, g_cy, g_w, g_h) against priors, [..., 4] broadcast."""
    boxes_cxcywh = np.asarray(boxes_cxcywh)
    priors_cxcywh = np.asarray(priors_cxcywh)
    center_var, size_var = variances
    g_cxy = (boxes_cxcywh[..., :2] - priors_cxcywh[..., :2]) / (center_var * priors_cxcywh[..., 2:])
    g_wh = np.log(boxes_cxcywh[..., 2:] / priors_cxcywh[..., 2:]) / size_var
    return np.concatenate([g_cxy, g_wh], axis=-1)


def decode(
    offsets: np.ndarray, priors_cxcywh: np.ndarray, variances: tuple[float, float] = VARIANCES
) -> np.ndarray:
    """Offsets (g_cx, g_cy, g_w, g_h) -> boxes (cx, cy, w, h) against priors, [..., 4] broadcast."""
    offsets = np.asarray(offsets)
    priors_cxcywh = np.asarray(priors_cxcywh)
    center_var, size_var = variances
    cxy = offsets[..., :2] * (center_var * priors_cxcywh[..., 2:]) + priors_cxcywh[..., :2]
    wh = np.exp(offsets[..., 2:] * size_var) * priors_cxcywh[..., 2:]
    return np.concatenate([cxy, wh], axis=-1)


def box_area(boxes_xyxy: np.ndarray) -> np.ndarray:
    """Area of xyxy boxes [..., 4] -> [...]; negative extents count as 0."""
    wh = np.clip(boxes_xyxy[..., 2:] - boxes_xyxy[..., :2], 0, None)
    return wh[..., 0] * wh[..., 1]


def iou(boxes1_xyxy: np.ndarray, boxes2_xyxy: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: [..., N, 4] x [..., M, 4] -> [..., N, M], no +1 pixel convention.

    Pairs whose union is empty get IoU 0.
    """
    boxes1_xyxy = np.asarray(boxes1_xyxy)
    boxes2_xyxy = np.asarray(boxes2_xyxy)
    top_left = np.maximum(boxes1_xyxy[..., :, None, :2], boxes2_xyxy[..., None, :, :2])
    bottom_right = np.minimum(boxes1_xyxy[..., :, None, 2:], boxes2_xyxy[..., None, :, 2:])
    inter_wh = np.clip(bottom_right - top_left, 0, None)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = box_area(boxes1_xyxy)[..., :, None] + box_area(boxes2_xyxy)[..., None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
    return out.astype(np.result_type(boxes1_xyxy, boxes2_xyxy), copy=False)


def clip(boxes_xyxy: np.ndarray, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """Clip xyxy box corners to [low, high] (fractional image by default)."""
    return np.clip(boxes_xyxy, low, high)
