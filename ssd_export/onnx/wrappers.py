"""Export-only wrappers around :class:`ssd_train.model.SSD300` (the model's forward stays untouched).

- :class:`Uint8NHWCInput`: raw frames in, ``(locs, class_logits)`` out; normalization in the graph.
- ``ssd_train.model.FP16Network`` (used for the FP16 export): FP16 weights and activations, FP32 where FP16 overflows (the conv4_3 L2 norm),
  FP32 graph inputs and outputs.
- :class:`ScoresAndBoxes`: the network plus softmax and box decoding - the first half of the
  end-to-end graph; the NMS half is appended in ONNX by :mod:`ssd_export.onnx.end2end`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssd_runtime.spec import ModelSpec
from ssd_train.boxes import cxcywh_to_xyxy, decode
from ssd_train.model import SSD300


class Uint8NHWCInput(nn.Module):
    """images uint8 (N, S, S, 3) RGB, already resized to the model's input size -> (locs, class_logits)."""

    def __init__(self, model: SSD300, spec: ModelSpec) -> None:
        super().__init__()
        self.model = model
        scale, bias = spec.normalization()
        self.register_buffer("scale", torch.from_numpy(scale).view(1, 3, 1, 1))
        self.register_buffer("bias", torch.from_numpy(bias).view(1, 3, 1, 1))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, S, S, 3) RGB -> float32 (N, 3, S, S): ``x * scale + bias`` as the training data does."""
        # Cast first, then (N, S, S, 3) -> (N, 3, S, S): TensorRT takes UINT8 only as a network input that a
        # Cast to float reads (onnx-tensorrt refuses a node producing a UINT8 tensor that is not a graph
        # output, ModelImporter.cpp 241-254 at 10.1-GA), so the Transpose must see float32.
        pixels = images.to(torch.float32).permute(0, 3, 1, 2)
        return pixels * self.scale + self.bias

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(self.normalize(images))


class ScoresAndBoxes(nn.Module):
    """images float32 (N, 3, S, S) -> boxes (N, P, 4) fractional xyxy, scores (N, C-1, P).

    Softmax over classes in FP32, background dropped, transposed to the layout ONNX NonMaxSuppression
    takes; boxes decoded against the priors (variances from the spec), not clipped (as the reference).
    """

    def __init__(self, model: SSD300, spec: ModelSpec) -> None:
        super().__init__()
        self.model = model
        self.variances = tuple(spec.variances)
        self.register_buffer("priors", torch.from_numpy(np.array(spec.make_priors(), dtype=np.float32)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        locs, class_logits = self.model(images)
        scores = F.softmax(class_logits.float(), dim=-1)
        # (N, P, C) -> (N, C-1, P): background dropped, classes first
        scores = scores[:, :, 1:].transpose(1, 2)
        boxes = cxcywh_to_xyxy(decode(locs.float(), self.priors, self.variances))
        return boxes, scores
