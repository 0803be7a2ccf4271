"""Torch twins of ``ssd_runtime.boxes``: same names, signatures and formulas, on tensors [..., 4].

Imports torch: ``ssd_runtime/__init__`` never imports this module (the runtime's NumPy path stays
torch-free). It lives in ``ssd_runtime`` because the torch postprocess (runtime GPU path) needs it;
``ssd_train.boxes`` re-exports it for training code.
"""
from __future__ import annotations

import torch

from ssd_runtime.boxes import CENTER_VARIANCE, SIZE_VARIANCE, VARIANCES

__all__ = [
    "CENTER_VARIANCE", "SIZE_VARIANCE", "VARIANCES",
    "xyxy_to_cxcywh", "cxcywh_to_xyxy", "encode", "decode", "box_area", "iou", "clip",
]  # fmt: skip


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(x_min, y_min, x_max, y_max) -> (cx, cy, w, h), [..., 4]."""
    return torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], -1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x_min, y_min, x_max, y_max), [..., 4]."""
    return torch.cat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], -1)


def encode(
    boxes_cxcywh: torch.Tensor, priors_cxcywh: torch.Tensor, variances: tuple[float, float] = VARIANCES
) -> torch.Tensor:
    """Boxes (cx, cy, w, h) -> offsets (g_cx, g_cy, g_w, g_h) against priors, [..., 4] broadcast."""
    center_var, size_var = variances
    g_cxy = (boxes_cxcywh[..., :2] - priors_cxcywh[..., :2]) / (center_var * priors_cxcywh[..., 2:])
    g_wh = torch.log(boxes_cxcywh[..., 2:] / priors_cxcywh[..., 2:]) / size_var
    return torch.cat([g_cxy, g_wh], -1)


def decode(
    offsets: torch.Tensor, priors_cxcywh: torch.Tensor, variances: tuple[float, float] = VARIANCES
) -> torch.Tensor:
    """Offsets (g_cx, g_cy, g_w, g_h) -> boxes (cx, cy, w, h) against priors, [..., 4] broadcast."""
    center_var, size_var = variances
    cxy = offsets[..., :2] * (center_var * priors_cxcywh[..., 2:]) + priors_cxcywh[..., :2]
    wh = torch.exp(offsets[..., 2:] * size_var) * priors_cxcywh[..., 2:]
    return torch.cat([cxy, wh], -1)


def box_area(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """Area of xyxy boxes [..., 4] -> [...]; negative extents count as 0."""
    wh = (boxes_xyxy[..., 2:] - boxes_xyxy[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes: [..., N, 4] x [..., M, 4] -> [..., N, M]; empty unions give 0."""
    top_left = torch.maximum(boxes1_xyxy[..., :, None, :2], boxes2_xyxy[..., None, :, :2])
    bottom_right = torch.minimum(boxes1_xyxy[..., :, None, 2:], boxes2_xyxy[..., None, :, 2:])
    inter_wh = (bottom_right - top_left).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = box_area(boxes1_xyxy)[..., :, None] + box_area(boxes2_xyxy)[..., None, :] - inter
    positive = union > 0
    return torch.where(positive, inter / torch.where(positive, union, torch.ones_like(union)), 0.0)


def clip(boxes_xyxy: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Clip xyxy box corners to [low, high] (fractional image by default)."""
    return boxes_xyxy.clamp(low, high)
