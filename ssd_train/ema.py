"""Exponential moving average of a model's weights (``TrainConfig.ema``)."""
from __future__ import annotations

import copy

import torch


class ModelEMA:
    """Exponential moving average of a model's weights and BatchNorm statistics, for evaluation and export.

    ``update(model)`` after each optimizer step sets ``average = d * average + (1 - d) * current`` for every
    floating-point parameter and buffer (integer buffers are copied), with ``d = min(decay, (1 + t) / (10 + t))``
    at update t: the first, far-off weights are forgotten fast. One foreach lerp per step and no host
    synchronisation (``torch.optim.swa_utils.AveragedModel`` reads its update count back from the device
    every step, which would stall a GPU).
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @staticmethod
    def _tensors(model: torch.nn.Module) -> list[torch.Tensor]:
        return [t.detach() for t in (*model.parameters(), *model.buffers())]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averaged, current = [], []
        for a, c in zip(self._tensors(self.module), self._tensors(model), strict=True):
            if a.is_floating_point():
                averaged.append(a)
                current.append(c)
            else:
                a.copy_(c)
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
