"""SSD300 training: model, loss, data, training and PyTorch evaluation.

``TrainConfig.from_recipe("cpu-quick", data=..., out=...)`` and ``fit(config)`` are the Python form of
``ssd-train fit --recipe cpu-quick``.

The names below are imported on first use (PEP 562), so the torch-free modules of this package
(``ssd_train.synthetic``, ``ssd_train.augment``: the verification scenes of ``ssd_export.parity``)
import without torch - what checks a TensorRT engine on a Jetson that has no torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "RECIPE_NAMES": "ssd_train.config", "TrainConfig": "ssd_train.config", "LossParts": "ssd_train.loss",
    "MultiBoxLoss": "ssd_train.loss", "SSD300": "ssd_train.model", "FitResult": "ssd_train.train",
    "fit": "ssd_train.train",
}  # fmt: skip

__all__ = ["RECIPE_NAMES", "SSD300", "FitResult", "LossParts", "MultiBoxLoss", "TrainConfig", "fit"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ssd_train' has no attribute {name!r}")
