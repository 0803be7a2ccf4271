"""Checkpoints: tensors plus plain data, loadable with ``torch.load(weights_only=True)``, written atomically.

Layout (a dict):
    format: "ssd300-toolkit-checkpoint", format_version: 1,
    spec: ModelSpec.to_dict() (classes, width, priors and their hash, ...),
    model: the network's state dict,
    training: optional plain data + tensors (iteration, optimizer, scheduler, scaler, RNG states, ...).
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ssd_runtime.fileio import atomic_path
from ssd_runtime.spec import ModelSpec
from ssd_train.model import SSD300

FORMAT = "ssd300-toolkit-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, unsafe, or not a toolkit checkpoint."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the spec, the model's state dict, and optional training state."""

    spec: ModelSpec
    model_state: dict[str, torch.Tensor]
    training: dict[str, Any] | None = None
    path: Path | None = field(default=None)

    def build_model(self) -> SSD300:
        """The network with these weights (on the CPU, in eval mode)."""
        model = SSD300.from_spec(self.spec)
        try:
            model.load_state_dict(self.model_state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{self.path}: weights do not fit the network its spec describes: {exc}") from exc
        return model.eval()


def save_checkpoint(
    path: str | Path, model: torch.nn.Module, spec: ModelSpec, training: dict[str, Any] | None = None
) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, fsync, replace).

    ``model`` may be wrapped (DistributedDataParallel, torch.compile): its plain module is saved.
    A failure (disk full, ...) leaves any previous file at ``path`` intact and no temp file behind.
    """
    module = getattr(model, "module", model)
    module = getattr(module, "_orig_mod", module)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "model": state,
        "training": training,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a toolkit checkpoint with ``weights_only=True`` (no code in the file can run)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused to load {path}: it holds objects a weights-only load does not allow ({_first_line(exc)}); "
            "it may run code when unpickled. If it is the tutorial's checkpoint_ssd300.pth.tar, convert it with "
            "`ssd-train import-tutorial`; never load untrusted files with weights_only=False"
        ) from exc
    except (EOFError, zipfile.BadZipFile, RuntimeError, OSError) as exc:
        raise CheckpointError(f"corrupt/truncated checkpoint {path}: {_first_line(exc)}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an SSD300 toolkit checkpoint (no '{FORMAT}' header); "
            "train with `ssd-train fit` or convert with `ssd-train import-tutorial`"
        )
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('format_version')!r} is not supported "
            f"(this toolkit reads {FORMAT_VERSION})"
        )
    spec = ModelSpec.from_dict(payload.get("spec"), source=str(path))
    return Checkpoint(spec=spec, model_state=payload["model"], training=payload.get("training"), path=path)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[SSD300, ModelSpec]:
    """The network and spec stored in a checkpoint, in eval mode."""
    checkpoint = load_checkpoint(path, map_location)
    return checkpoint.build_model(), checkpoint.spec


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
