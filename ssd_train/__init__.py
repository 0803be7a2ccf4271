"""SSD300 training: model, loss, data, training and PyTorch evaluation."""
from ssd_train.loss import LossParts, MultiBoxLoss
from ssd_train.model import SSD300

__all__ = ["SSD300", "LossParts", "MultiBoxLoss"]
