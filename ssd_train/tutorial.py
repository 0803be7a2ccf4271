"""Import the reference tutorial's released checkpoint (``checkpoint_ssd300.pth.tar``) without running it.

The tutorial (sgrvinod/a-PyTorch-Tutorial-to-Object-Detection) published its 77.2-mAP model as
``torch.save({'epoch': e, 'model': SSD300(...), 'optimizer': SGD(...)})`` from PyTorch 0.4: a pickle of
whole objects (classes from a module named ``model``, ``torch.nn`` layers, a torch SGD optimizer) in the
legacy non-zip serialisation. ``torch.load`` can only read it with ``weights_only=False``, which runs
whatever the pickle names. This module reads it with :mod:`ssd_train.safe_unpickle` instead, allowing
the tutorial's classes (:data:`TUTORIAL_CLASSES`) and torch's layer and optimizer classes
(:data:`STANDIN_PACKAGES`) as inert stand-ins and refusing every other global before anything could
call it (see ``docs/reference.md``, section "Loading untrusted files").

The stand-in tree is then walked (``_modules`` / ``_parameters``) into a state dict with our
parameter names, which are the tutorial's (see :mod:`ssd_train.model`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

from ssd_runtime.fileio import sha256_file
from ssd_runtime.priors import PriorConfig, make_priors
from ssd_runtime.spec import VOC_CLASSES, ModelSpec
from ssd_train import safe_unpickle
from ssd_train.checkpoint import CheckpointError, save_checkpoint
from ssd_train.model import SSD300
from ssd_train.safe_unpickle import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    CorruptCheckpointError,
    RestrictedUnpickler,
    StandIn,
    UnsafeCheckpointError,
)

#: Classes of the tutorial's ``model.py`` that may appear in its checkpoint (as inert stand-ins).
TUTORIAL_CLASSES = frozenset({"model.SSD300", "model.VGGBase", "model.AuxiliaryConvolutions",
                              "model.PredictionConvolutions"})  # fmt: skip
#: torch packages whose classes (layers, containers, optimizers) may appear, as inert stand-ins.
STANDIN_PACKAGES = ("torch.nn.modules.", "torch.optim.")
#: The tutorial's module tree is 2 levels deep (model.base.conv1_1); anything far deeper is refused.
MAX_MODULE_DEPTH = 8
#: Largest difference allowed between the file's ``priors_cxcy`` and ours (float32 rounding).
PRIORS_ATOL = 1e-5


class TutorialCheckpointError(CheckpointError):
    """The tutorial checkpoint is missing, corrupt, or not the tutorial's SSD300."""


class UnsafeTutorialCheckpointError(TutorialCheckpointError, UnsafeCheckpointError):
    """The tutorial checkpoint's pickle names something other than tensors, containers and known classes."""


def unpickle_checkpoint(path: str | Path) -> Any:
    """The objects in a tutorial-like torch checkpoint (zip or legacy format), rebuilt without running it.

    :func:`ssd_train.safe_unpickle.unpickle_checkpoint` with the tutorial's allow-list: tensors come
    back as CPU tensors, the known classes as :class:`StandIn` records. Raises UnsafeTutorialCheckpointError
    (an UnsafeCheckpointError) for anything else the pickle names, and TutorialCheckpointError for a
    missing, corrupt or truncated file; both name the file.
    """
    try:
        return safe_unpickle.unpickle_checkpoint(
            path, allowed_classes=TUTORIAL_CLASSES, standin_packages=STANDIN_PACKAGES, what="tutorial checkpoint"
        )
    except UnsafeCheckpointError as exc:
        raise UnsafeTutorialCheckpointError(
            f"{exc}; only the tutorial's own checkpoint (an SSD300, its layers and an SGD optimizer) can be imported"
        ) from None
    except CorruptCheckpointError as exc:
        raise TutorialCheckpointError(str(exc)) from None


# --- from stand-ins to our state dict -----------------------------------------------------------------


@dataclass
class TutorialCheckpoint:
    """What the tutorial's file holds that we keep.

    model_state: our SSD300's parameter names -> float32 CPU tensors.
    epoch: the tutorial's epoch counter, if present.
    priors_checked: whether the file carried ``priors_cxcy`` (then checked equal to ours).
    """

    model_state: dict[str, torch.Tensor]
    epoch: int | None
    priors_checked: bool


@cache
def _our_parameter_names() -> tuple[str, ...]:
    # Names do not depend on width or class count: a narrow model lists them cheaply.
    return tuple(SSD300(num_classes=2, width=0.125).state_dict())


def _modules_state(node: StandIn, prefix: str, out: dict[str, torch.Tensor], seen: set[int], path: Path) -> None:
    """Collect ``_parameters`` (and persistent ``_buffers``) of a stand-in module tree into ``out``."""
    if prefix.count(".") > MAX_MODULE_DEPTH:
        raise TutorialCheckpointError(f"{path}: modules nested deeper than {MAX_MODULE_DEPTH} levels")
    if id(node) in seen:
        raise TutorialCheckpointError(f"{path}: module {prefix or 'model'} appears twice in the tree")
    seen.add(id(node))
    non_persistent = node.state.get("_non_persistent_buffers_set") or set()
    for table in ("_parameters", "_buffers"):
        entries = node.state.get(table, {})
        if not isinstance(entries, Mapping):
            raise TutorialCheckpointError(f"{path}: {prefix or 'model'} has a malformed {table}")
        for name, tensor in entries.items():
            if tensor is None or (table == "_buffers" and name in non_persistent):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise TutorialCheckpointError(f"{path}: {prefix}{name} is not a tensor")
            out[f"{prefix}{name}"] = tensor
    children = node.state.get("_modules", {})
    if not isinstance(children, Mapping):
        raise TutorialCheckpointError(f"{path}: {prefix or 'model'} has malformed _modules")
    for name, child in children.items():
        if child is None:
            continue
        if not isinstance(child, StandIn):
            raise TutorialCheckpointError(f"{path}: {prefix}{name} is not a module")
        _modules_state(child, f"{prefix}{name}.", out, seen, path)


def load_tutorial_checkpoint(path: str | Path) -> TutorialCheckpoint:
    """Read the tutorial's ``checkpoint_ssd300.pth.tar`` (either torch format) without running its pickle.

    Only the network's weights are kept (the optimizer and the pooling layers are read as inert
    records and dropped). Raises TutorialCheckpointError naming the file when the file is not a
    ``{'model': SSD300, ...}`` dict, a parameter is missing or extra, or its priors differ from ours.
    """
    path = Path(path)
    payload = unpickle_checkpoint(path)
    model = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(model, StandIn) or model.origin != "model.SSD300":
        found = type(model).__name__ if not isinstance(model, StandIn) else model.origin
        raise TutorialCheckpointError(
            f"{path} is not the tutorial's checkpoint: expected a dict whose 'model' is a model.SSD300, "
            f"found {found if isinstance(payload, dict) else type(payload).__name__}"
        )
    found: dict[str, torch.Tensor] = {}
    _modules_state(model, "", found, set(), path)
    expected = _our_parameter_names()
    missing = [k for k in expected if k not in found]
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        raise TutorialCheckpointError(
            f"{path}: parameters do not match the tutorial's SSD300: missing {missing[:4]}"
            f"{' ...' if len(missing) > 4 else ''}, unexpected {extra[:4]}{' ...' if len(extra) > 4 else ''}"
        )
    bad = [k for k in expected if not found[k].is_floating_point()]
    if bad:
        raise TutorialCheckpointError(f"{path}: parameters {bad[:4]} are not floating point")
    state = {k: found[k].to(torch.float32) for k in expected}
    priors = model.state.get("priors_cxcy")
    if isinstance(priors, torch.Tensor):
        ours = torch.from_numpy(make_priors(PriorConfig()).copy())
        if priors.shape != ours.shape or not torch.allclose(priors.float(), ours, rtol=0, atol=PRIORS_ATOL):
            raise TutorialCheckpointError(
                f"{path}: its priors_cxcy {tuple(priors.shape)} differ from the reference priors this toolkit "
                "generates; the converted model would decode boxes against the wrong priors"
            )
    epoch = payload.get("epoch")
    return TutorialCheckpoint(state, epoch if type(epoch) is int else None, isinstance(priors, torch.Tensor))


def read_tutorial_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tutorial checkpoint's network weights as a state dict in our parameter names (float32, CPU)."""
    return load_tutorial_checkpoint(path).model_state


def convert_tutorial_checkpoint(src: str | Path, dst: str | Path) -> ModelSpec:
    """Convert the tutorial's checkpoint into a toolkit checkpoint (weights only, atomic write).

    The weights are checked to load strictly into ``SSD300(21)`` at width 1.0 (names and shapes);
    the spec is the VOC spec with provenance: source file name and sha256, tutorial epoch.
    Returns the spec written to ``dst``.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"refusing to overwrite the tutorial checkpoint {src} with its conversion: choose another output")
    tutorial = load_tutorial_checkpoint(src)
    spec = ModelSpec.create(VOC_CLASSES, width=1.0).with_provenance(
        converted_from="sgrvinod tutorial",
        source=src.name,
        source_sha256=sha256_file(src),
        tutorial_epoch="unknown" if tutorial.epoch is None else str(tutorial.epoch),
    )
    model = SSD300.from_spec(spec)
    try:
        model.load_state_dict(tutorial.model_state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise TutorialCheckpointError(
            f"{src}: weights do not fit SSD300 with {spec.num_classes} VOC classes: "
            f"{first[1].strip() if len(first) > 1 else first[0]}"
        ) from None
    save_checkpoint(dst, model, spec)
    return spec


__all__ = [
    "LEGACY_MAGIC_NUMBER", "LEGACY_PROTOCOL_VERSION", "MAX_MODULE_DEPTH", "PRIORS_ATOL", "STANDIN_PACKAGES",
    "TUTORIAL_CLASSES", "RestrictedUnpickler", "StandIn", "TutorialCheckpoint", "TutorialCheckpointError",
    "UnsafeCheckpointError", "UnsafeTutorialCheckpointError", "convert_tutorial_checkpoint",
    "load_tutorial_checkpoint", "read_tutorial_checkpoint", "unpickle_checkpoint",
]  # fmt: skip
