"""Export-only wrappers around :class:`ssd_train.model.SSD300` (the model's forward stays untouched).

- :class:`Uint8NHWCInput`: raw frames in, ``(locs, class_logits)`` out; normalisation in the graph.
- :class:`FP16Network`: FP16 weights and activations, FP32 where FP16 overflows (the conv4_3 L2 norm),
  FP32 graph inputs and outputs.
- :class:`ScoresAndBoxes`: the network plus softmax and box decoding - the first half of the
  end-to-end graph; the NMS half is appended in ONNX by :mod:`ssd_export.end2end`.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssd_runtime.spec import ModelSpec
from ssd_train.boxes import cxcywh_to_xyxy, decode
from ssd_train.model import L2NORM_EPS, SSD300


class Uint8NHWCInput(nn.Module):
    """images uint8 (N, S, S, 3) RGB, already resized to the model's input size -> (locs, class_logits)."""

    def __init__(self, model: SSD300, spec: ModelSpec) -> None:
        super().__init__()
        self.model = model
        self.register_buffer(
            "scale", torch.tensor([1.0 / (255.0 * s) for s in spec.std], dtype=torch.float32).view(1, 3, 1, 1)
        )
        self.register_buffer(
            "bias", torch.tensor([-m / s for m, s in zip(spec.mean, spec.std)], dtype=torch.float32).view(1, 3, 1, 1)
        )

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, S, S, 3) RGB -> float32 (N, 3, S, S): ``x * scale + bias`` as the training data does."""
        # (N, S, S, 3) uint8 -> (N, 3, S, S) float32
        pixels = images.permute(0, 3, 1, 2).to(torch.float32)
        return pixels * self.scale + self.bias

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(self.normalise(images))


class FP16Network(nn.Module):
    """SSD300 in FP16 with the overflow-prone L2 norm of conv4_3 in FP32; FP32 input and outputs.

    The conv4_3 norm sums 512 squares per location: with activations above ~11 that sum passes FP16's
    65,504 and the naive FP16 network returns inf/NaN. Here conv4_3 is cast to FP32, normalised and
    rescaled in FP32, and cast back (normalised values are at most the rescale factor, ~20). There is
    no softmax in the graph (the postprocess applies it in FP32).
    """

    def __init__(self, model: SSD300) -> None:
        super().__init__()
        model = copy.deepcopy(model).eval()
        self.base = model.base.half()
        self.aux_convs = model.aux_convs.half()
        self.pred_convs = model.pred_convs.half()
        self.rescale_factors = nn.Parameter(model.rescale_factors.detach().float().clone())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conv4_3, conv7 = self.base(images.to(torch.float16))
        x = conv4_3.to(torch.float32)
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_min(L2NORM_EPS)
        conv4_3 = (x / norm * self.rescale_factors).to(torch.float16)
        sources = (conv4_3, conv7, *self.aux_convs(conv7))
        locs, class_logits = self.pred_convs(sources)
        return locs.to(torch.float32), class_logits.to(torch.float32)


class NaiveFP16Network(nn.Module):
    """Everything in FP16 (the L2 norm too): what a blanket FP16 conversion gives. For comparisons only."""

    def __init__(self, model: SSD300) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).eval().half()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        locs, class_logits = self.model(images.to(torch.float16))
        return locs.to(torch.float32), class_logits.to(torch.float32)


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
