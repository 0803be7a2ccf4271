"""Files built like the tutorial's ``checkpoint_ssd300.pth.tar``: whole pickled objects.

The tutorial saved ``{'epoch', 'model', 'optimizer'}`` where ``model`` is an ``SSD300`` from its module
``model`` (attributes ``base``, ``aux_convs``, ``pred_convs``, ``rescale_factors``, ``priors_cxcy`` as a
plain attribute) and ``optimizer`` a torch SGD with momentum state, from PyTorch 0.4 (legacy format).
Here classes with the same module/class names and attribute layout are built around the layers of
one of our SSD300s, saved with ``torch.save`` in either format, and the fake ``model`` module is
removed again, so reading the file can only work if nothing imports it.
"""
from __future__ import annotations

import sys
import types
import warnings
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from ssd_train.model import SSD300 as OurSSD300


class _THNNBackend:
    """PyTorch 0.4 modules carried ``_backend``, pickled as a call of this (harmless) torch function."""

    def __reduce__(self):
        import torch.nn.backends.thnn

        return (torch.nn.backends.thnn._get_thnn_function_backend, ())


class _Parameter04(nn.Parameter):
    """A parameter pickled the PyTorch 0.4 way: ``Parameter(data, requires_grad)``."""

    def __reduce_ex__(self, proto):
        return (nn.Parameter, (self.data, self.requires_grad))


def _adopt(target: nn.Module, source: nn.Module) -> None:
    for name, child in source.named_children():
        child._backend = _THNNBackend()
        setattr(target, name, child)
    target._backend = _THNNBackend()


class VGGBase(nn.Module):
    def __init__(self, ours: OurSSD300) -> None:
        super().__init__()
        _adopt(self, ours.base)  # conv1_1 .. conv7
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        self.pool4 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool5 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)


class AuxiliaryConvolutions(nn.Module):
    def __init__(self, ours: OurSSD300) -> None:
        super().__init__()
        _adopt(self, ours.aux_convs)


class PredictionConvolutions(nn.Module):
    def __init__(self, ours: OurSSD300) -> None:
        super().__init__()
        self.n_classes = ours.num_classes  # the tutorial's attribute name
        _adopt(self, ours.pred_convs)


class SSD300(nn.Module):
    def __init__(self, ours: OurSSD300) -> None:
        super().__init__()
        self.n_classes = ours.num_classes  # the tutorial's attribute name
        self.base = VGGBase(ours)
        self.aux_convs = AuxiliaryConvolutions(ours)
        self.pred_convs = PredictionConvolutions(ours)
        self.rescale_factors = _Parameter04(ours.rescale_factors.data)  # shares our storage
        self.priors_cxcy = ours.priors_cxcy.clone()  # a plain attribute in the tutorial, not a buffer
        self._backend = _THNNBackend()


TUTORIAL_CLASSES = (SSD300, VGGBase, AuxiliaryConvolutions, PredictionConvolutions)


def fake_model_module() -> types.ModuleType:
    """A module named ``model`` holding the tutorial-like classes (so pickle names them model.X)."""
    module = types.ModuleType("model")
    module.__file__ = __file__  # torch's legacy save stores each container class's source, as in 0.4
    for cls in TUTORIAL_CLASSES:
        cls.__module__ = "model"
        setattr(module, cls.__name__, cls)
    return module


def _sgd_after_one_step(model: nn.Module, stepped: list[nn.Parameter], lr: float = 1e-3, momentum: float = 0.9,
                        weight_decay: float = 5e-4) -> torch.optim.SGD:
    """A torch SGD over ``model``'s parameters as after one step in which only ``stepped`` had gradients.

    Built without ``SGD.__init__`` (which imports torch._dynamo: 4-7 s on a 2-core machine); it pickles
    the same way, through ``Optimizer.__getstate__`` (defaults, state keyed by parameter, param_groups).
    Only a few parameters get momentum buffers, which keeps the file small.
    """
    defaults = {"lr": lr, "momentum": momentum, "dampening": 0, "weight_decay": weight_decay, "nesterov": False,
                "maximize": False, "foreach": None, "differentiable": False, "fused": None}
    optimizer = object.__new__(torch.optim.SGD)
    state: defaultdict = defaultdict(dict)
    with torch.no_grad():
        for p in stepped:  # the first SGD step with gradient 1: buf = g + wd * p; p -= lr * buf
            buf = torch.ones_like(p) + weight_decay * p
            p -= lr * buf
            state[p] = {"momentum_buffer": buf}
    optimizer.__dict__.update(defaults=defaults, state=state,
                              param_groups=[{"params": list(model.parameters()), **defaults}])
    return optimizer


def save_tutorial_like(path: Path, ours: OurSSD300, *, legacy: bool, epoch: int = 3, extra: dict | None = None,
                       drop: str | None = None) -> Path:
    """Save ``{'epoch', 'model', 'optimizer'}`` built around ``ours`` the way the tutorial did.

    legacy: torch's non-zip serialisation (what PyTorch 0.4 wrote) instead of the zip format.
    extra: attributes set on the tutorial-like model (e.g. a payload). drop: a submodule path to delete.
    """
    sys.modules["model"] = fake_model_module()
    try:
        model = SSD300(ours)
        for name, value in (extra or {}).items():
            setattr(model, name, value)
        if drop is not None:
            parent, _, leaf = drop.rpartition(".")
            delattr(model.get_submodule(parent), leaf)
        optimizer = _sgd_after_one_step(model, [model.rescale_factors, model.pred_convs.loc_conv4_3.weight])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Couldn't retrieve source code for container ..."
            torch.save({"epoch": epoch, "model": model, "optimizer": optimizer}, path,
                       _use_new_zipfile_serialization=not legacy)
    finally:
        del sys.modules["model"]
    return path
