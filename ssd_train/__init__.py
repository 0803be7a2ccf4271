"""SSD300 training: model, loss, data, training and PyTorch evaluation.

``TrainConfig.from_recipe("cpu-quick", data=..., out=...)`` and ``fit(config)`` are the Python form of
``ssd-train fit --recipe cpu-quick``.

Importing any module of this package imports torch: what must run without it (the runtime, the
generated scenes that parity checks engines on) lives in ``ssd_runtime``.
"""
from ssd_train.config import RECIPE_NAMES, TrainConfig
from ssd_train.loss import LossParts, MultiBoxLoss
from ssd_train.model import SSD300
from ssd_train.train import FitResult, fit

__all__ = ["RECIPE_NAMES", "SSD300", "FitResult", "LossParts", "MultiBoxLoss", "TrainConfig", "fit"]
