"""End-to-end model outputs (NMS inside the model) -> :class:`Detections` at the caller's settings.

An ``end2end`` ONNX model (``ssd-export onnx --variant end2end``) and the TensorRT engine built from
it output fixed-size padded detections, K = the baked ``top_k``:

- ``boxes`` float32 (N, K, 4) fractional xyxy, zeros past ``num_detections``;
- ``scores`` float32 (N, K), descending (ties: class asc, then prior asc), zeros past ``num_detections``;
- ``labels`` int (N, K) class indices 1..C-1, -1 past ``num_detections``;
- ``num_detections`` int (N,).

The postprocess settings are baked into the graph. Some other settings can be applied exactly after
the fact: a higher ``min_score`` (greedy NMS decides a box only by higher-scored boxes, so every box
above the higher threshold was kept or suppressed exactly as it would have been) and a lower
``top_k`` (the first ``top_k`` of the same order). Anything else - another ``max_overlap``, a lower
``min_score``, a larger ``top_k`` - the model cannot honour: :class:`End2EndSettingsError`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ssd_runtime.detections import Detections
from ssd_runtime.spec import PostprocessSettings
from ssd_runtime.variants import DETECTION_OUTPUTS

__all__ = ["END2END_OUTPUTS", "End2EndSettingsError", "check_settings", "end2end_detections", "padded_to_detections"]

#: The outputs of an end-to-end model, in this order (:data:`ssd_runtime.variants.DETECTION_OUTPUTS`).
END2END_OUTPUTS = DETECTION_OUTPUTS


class End2EndSettingsError(ValueError):
    """Postprocess settings that an end-to-end model (NMS baked in) cannot honour."""


def check_settings(baked: PostprocessSettings, settings: PostprocessSettings) -> None:
    """Raise :class:`End2EndSettingsError` unless ``settings`` can be applied to ``baked`` outputs exactly."""
    problems = []
    if settings.max_overlap_float32 != baked.max_overlap_float32:
        problems.append(f"max_overlap {settings.max_overlap} (baked: {baked.max_overlap})")
    if settings.min_score_float32 < baked.min_score_float32:
        problems.append(f"min_score {settings.min_score} below the baked {baked.min_score}")
    if settings.top_k > baked.top_k:
        problems.append(f"top_k {settings.top_k} above the baked {baked.top_k}")
    if problems:
        raise End2EndSettingsError(
            f"this end-to-end model has its postprocess baked in (min_score {baked.min_score}, max_overlap "
            f"{baked.max_overlap}, top_k {baked.top_k}) and cannot give {', '.join(problems)}: a higher "
            "min_score and a lower top_k are applied exactly; for anything else re-export it with "
            "`ssd-export onnx --variant end2end` at those settings, or use the fp32 variant (raw outputs)"
        )


def padded_to_detections(boxes: Any, scores: Any, labels: Any, num_detections: Any) -> list[Detections]:
    """Padded end-to-end outputs (NumPy or torch; see the module docstring) -> :class:`Detections` per image."""
    boxes, scores, labels, num_detections = (_host(x) for x in (boxes, scores, labels, num_detections))
    result = []
    for n, count in enumerate(num_detections.astype(np.int64)):
        result.append(Detections(
            boxes[n, :count].astype(np.float32),
            labels[n, :count].astype(np.int64),
            scores[n, :count].astype(np.float32),
        ))
    return result


def end2end_detections(outputs: tuple, baked: PostprocessSettings, settings: PostprocessSettings) -> list[Detections]:
    """End-to-end outputs -> :class:`Detections` per image at ``settings`` (checked against ``baked``)."""
    check_settings(baked, settings)
    threshold = settings.min_score_float32
    result = []
    for dets in padded_to_detections(*outputs):
        # scores are sorted descending, so the kept ones are a prefix; then at most top_k of them
        keep = min(int(np.count_nonzero(dets.scores > threshold)), settings.top_k)
        result.append(dets if keep == len(dets) else Detections(dets.boxes[:keep], dets.labels[:keep], dets.scores[:keep]))
    return result


def _host(array: Any) -> np.ndarray:
    """A NumPy array as is, a torch tensor copied to the host (end-to-end outputs are small: K per image)."""
    if isinstance(array, np.ndarray):
        return array
    return array.detach().cpu().numpy()
