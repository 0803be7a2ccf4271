"""Training state: what a checkpoint carries to resume a run exactly, and the weights a run starts from.

:class:`TrainingState` is the model, optimizer, gradient scaler, optional EMA, iteration, best mAP and
evaluation history of a run. ``save`` writes the checkpoint (the EMA's weights when there is one, plus
the training weights, optimizer, scaler and the RNG states of torch, NumPy and Python in its training
state); ``resume`` reads it back and refuses a checkpoint whose run settings differ.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssd_runtime.spec import ModelSpec
from ssd_train.checkpoint import load_checkpoint, save_checkpoint
from ssd_train.config import TrainConfig, TrainingError
from ssd_train.ema import ModelEMA
from ssd_train.model import SSD300


@dataclass
class TrainingState:
    """A run's mutable state at ``iteration`` (iterations done so far)."""

    config: TrainConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None = None
    iteration: int = 0
    best_map: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def kept(self) -> torch.nn.Module:
        """What checkpoints hold and evaluations measure: the averaged weights when there are any."""
        return self.model if self.ema is None else self.ema.module

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's ``training`` entry."""
        state = {
            "iteration": self.iteration,
            "config": self.config.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "best_map": self.best_map,
            "history": self.history,
        }
        if self.ema is not None:  # the checkpoint's model is the average; the training weights go on from here
            state["model"] = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
            state["ema_updates"] = self.ema.updates
        return state

    def save(self, path: Path, spec: ModelSpec) -> None:
        save_checkpoint(path, self.kept, spec, self.to_dict())

    def resume(self, path: Path, spec: ModelSpec) -> None:
        """Load the run saved at ``path`` (``OUT/last.pt``), RNG states included, after checking it fits."""
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint to resume at {path}; start without --resume")
        checkpoint = load_checkpoint(path)
        training = checkpoint.training or {}
        saved = training.get("config", {})
        differ = [f"{k}: {saved.get(k)!r} -> {getattr(self.config, k)!r}" for k in TrainConfig.RUN_FIELDS
                  if k in saved and saved.get(k) != getattr(self.config, k)]
        if differ:
            raise TrainingError(f"--resume {path}: the run was started with other settings ({'; '.join(differ)}); "
                                "resume with the same settings or start a new --out folder")
        if checkpoint.spec.class_names != spec.class_names or checkpoint.spec.priors_sha256 != spec.priors_sha256:
            raise TrainingError(f"--resume {path}: the checkpoint's classes or priors differ from this run's data")
        if self.ema is None:
            self.model.load_state_dict(checkpoint.model_state)
        else:
            if "model" not in training:
                raise TrainingError(f"--resume {path}: the run was trained without --ema; resume it without --ema")
            self.model.load_state_dict(training["model"])
            self.ema.module.load_state_dict(checkpoint.model_state)
            self.ema.updates = int(training["ema_updates"])
        self.optimizer.load_state_dict(training["optimizer"])
        self.scaler.load_state_dict(training["scaler"])
        set_rng_state(training["rng"])
        self.iteration = int(training["iteration"])
        self.best_map = training.get("best_map")
        self.history = list(training.get("history", []))


def init_from_checkpoint(model: SSD300, path: str, class_names: tuple[str, ...]) -> list[str]:
    """Copy weights from a checkpoint; class heads are left re-initialised when the class list differs.

    Returns the names of the class-head tensors left out.
    """
    source = load_checkpoint(path)
    if source.spec.width != model.width:
        raise ValueError(f"--init-from {path}: width {source.spec.width} does not match --width {model.width}")
    if source.spec.norm != model.norm:
        raise ValueError(f"--init-from {path}: norm {source.spec.norm!r} does not match --norm {model.norm!r}")
    if source.spec.priors != model.prior_config:
        raise ValueError(f"--init-from {path}: its priors ({source.spec.priors.scales}, clip {source.spec.priors.clip!r}) "
                         f"differ from this run's ({model.prior_config.scales}, clip {model.prior_config.clip!r}): "
                         "give the same --priors and --prior-clip")
    state = dict(source.model_state)
    skipped = []
    if tuple(source.spec.class_names) != tuple(class_names):
        skipped = [k for k in state if k.startswith("pred_convs.cl_")]
        for k in skipped:
            del state[k]
    model.load_state_dict(state, strict=False)
    return skipped


def seed_everything(seed: int) -> None:
    """Seed torch, Python's ``random`` and NumPy's global state."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (and CUDA when in use), NumPy and Python, as checkpoint-safe data."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(_plain_to_numpy_state(state["numpy"]))
    random.setstate(_plain_to_python_state(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state_to_plain(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _plain_to_numpy_state(state: dict[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return (state["name"], keys, state["pos"], state["has_gauss"], state["cached"])


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _plain_to_python_state(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
