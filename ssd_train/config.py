"""Training configuration: :class:`TrainConfig`, the named recipes and the allowed values of its fields.

The CLI (``ssd-train fit``) takes its flag choices and defaults from here, so a value allowed by the API is
one allowed by the command line. ``TrainConfig.from_recipe("cpu-quick", data=..., out=...)`` is the
``--recipe`` flag of ``ssd-train fit`` in Python.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from ssd_runtime.errors import ToolkitError
from ssd_runtime.priors import CLIP_MODES, PRIOR_PRESETS
from ssd_runtime.spec import NORMS
from ssd_train.augment import AUGMENTATIONS
from ssd_train.loss import LOC_LOSSES
from ssd_train.training_set import IMAGE_CHECKS

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine")
HEAD_INITS = ("reference", "background")
AMP_MODES = ("none", "bf16", "fp16")
DEVICES = ("cpu", "cuda")


class TrainingError(ToolkitError, RuntimeError):
    """Training cannot go on (a non-finite loss, a resume that does not fit the run)."""


#: Named recipes: values for the fields a caller does not give. "reference" is TrainConfig's own defaults.
RECIPES: dict[str, dict[str, Any]] = {
    "reference": {},
    # The CPU quick start, about 14 minutes on 2 cores (BENCHMARKS.md): a narrow network with BatchNorm
    # (none on the two 300x300 convs: cheaper) and the background head start, resize + flip
    # augmentation, AdamW with warm-up and a cosine schedule, and small batches (batch 4 beat 8 and 16
    # at the same number of images; width 0.0625 at twice the images did worse). Priors become positives
    # at IoU 0.4 instead of 0.5: more positives per object, the largest single gain measured.
    "cpu-quick": {"width": 0.125, "norm": "batch-from-conv2", "head_init": "background", "augment": "flip",
                  "match_threshold": 0.4, "batch_size": 4, "optimizer": "adamw", "lr": 2e-3, "weight_decay": 5e-4,
                  "schedule": "cosine", "warmup": 200, "iterations": 3200, "workers": 1, "eval_every": 0,
                  "save_every": 200, "log_every": 20, "grad_clip": 10.0, "channels_last": True},
}
RECIPE_NAMES = tuple(RECIPES)
DEFAULT_RECIPE = "reference"


@dataclass
class TrainConfig:
    """One training run. Defaults are the reference recipe (SGD, lr 1e-3, 120k iterations at batch 32).

    data: VOC roots (a VOCdevkit reads VOC2007+VOC2012 trainval for training and VOC2007 test for
        evaluation) or the folder of a generated dataset.
    classes: class names without background; ``None`` reads them from the dataset.
    skip_unknown_classes: drop objects whose class is not in ``classes`` (counted) instead of failing.
    check_images: check every training image before the run (``ssd_train.training_set.IMAGE_CHECKS``):
        "quick" (header and completeness, cached in ``out``), "full" (decode every image) or "off".
    skip_bad_images: leave unreadable images out (one counted warning) instead of stopping with the list.
    norm: "none" (the reference network), "batch" (BatchNorm after each conv) or "batch-from-conv2"
        (not after conv1_1/conv1_2); see ``SSD300``.
    head_init: "reference" (Xavier) or "background" (``SSD300.init_class_heads_background``).
    augment: "reference", "light" (no zoom-out) or "flip" (resize + flip): ``ssd_train.augment.AUGMENTATIONS``.
    priors: prior geometry, a name in ``ssd_runtime.priors.PRIOR_PRESETS`` ("reference" or "coco",
        smaller priors); ``prior_clip`` picks how they are clipped (``ssd_runtime.priors.CLIP_MODES``).
    loc_loss: ``ssd_train.loss.LOC_LOSSES``.
    match_threshold: IoU at or above which a prior is matched to an object (0.5, the paper's; each object's
        best prior is matched whatever its IoU). The quick start uses 0.4: more positives per object.
    lr_steps: iterations at which the learning rate is multiplied by ``lr_gamma`` ("step" schedule).
    warmup: iterations of linear warm-up from ``warmup_factor * lr``.
    ema: decay of an exponential moving average of the weights (0 = off; see :class:`ssd_train.ema.ModelEMA`).
        When on, checkpoints and evaluations hold the averaged weights, and the training weights travel in
        the checkpoint's training state for ``resume``.
    batch_size: the global batch; under torchrun each of the W processes takes batch_size / W.
    eval_every / save_every / log_every: iterations (0 disables periodic evaluation).
    eval_images: evaluate on at most this many test images (0 = all).
    """

    data: list[str]
    out: str
    classes: list[str] | None = None
    skip_unknown_classes: bool = False
    check_images: str = "quick"
    skip_bad_images: bool = False
    width: float = 1.0
    norm: str = "none"
    head_init: str = "reference"
    augment: str = "reference"
    vgg_weights: str | None = None
    init_from: str | None = None
    priors: str = "reference"
    prior_clip: str = "reference"
    loc_loss: str = "smooth_l1"
    match_threshold: float = 0.5
    batch_size: int = 32
    iterations: int = 120_000
    optimizer: str = "sgd"
    lr: float = 1e-3
    bias_lr_factor: float = 2.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"
    lr_steps: list[int] = field(default_factory=lambda: [80_000, 100_000])
    lr_gamma: float = 0.1
    warmup: int = 0
    warmup_factor: float = 0.001
    grad_clip: float | None = None
    ema: float = 0.0
    device: str = "cpu"
    amp: str = "none"
    channels_last: bool = False
    workers: int = 2
    seed: int = 0
    eval_every: int = 0
    eval_images: int = 0
    eval_batch_size: int = 32
    save_every: int = 1000
    log_every: int = 20
    resume: bool = False
    stop_at: int | None = None  # stop (as if killed) after this iteration; for tests and time-boxed runs
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [str(self.data)]
        for name, value, allowed in (
            ("optimizer", self.optimizer, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES),
            ("amp", self.amp, AMP_MODES), ("head_init", self.head_init, HEAD_INITS),
            ("augment", self.augment, AUGMENTATIONS), ("norm", self.norm, NORMS),
            ("priors", self.priors, tuple(PRIOR_PRESETS)), ("prior_clip", self.prior_clip, CLIP_MODES),
            ("loc_loss", self.loc_loss, LOC_LOSSES), ("check_images", self.check_images, IMAGE_CHECKS),
        ):  # fmt: skip
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.device == "cpu" and (self.amp != "none"):
            raise ValueError("AMP (bf16/fp16) is for --device cuda; train in FP32 on the CPU")
        if not 0.0 < self.match_threshold <= 1.0:
            raise ValueError(f"match_threshold is an IoU in (0, 1], got {self.match_threshold}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema is a decay in [0, 1) (0 = off, e.g. 0.998), got {self.ema}")
        if self.batch_size < 1 or self.iterations < 1:
            raise ValueError("batch_size and iterations must be positive")

    #: Fields that define the run: a resume must match them exactly.
    RUN_FIELDS = ("classes", "width", "norm", "head_init", "augment", "priors", "prior_clip", "loc_loss",
                  "match_threshold", "batch_size", "iterations", "optimizer", "lr", "bias_lr_factor", "momentum",
                  "weight_decay", "schedule", "lr_steps", "lr_gamma", "warmup", "warmup_factor", "grad_clip", "ema",
                  "seed", "amp")  # fmt: skip

    @classmethod
    def from_recipe(cls, name: str, **overrides: Any) -> TrainConfig:
        """The recipe ``name`` (one of :data:`RECIPE_NAMES`) with ``overrides`` on top; ``data`` and ``out`` are required."""
        if name not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPE_NAMES}, got {name!r}")
        return cls(**{**RECIPES[name], **overrides})

    @classmethod
    def default(cls, name: str) -> Any:
        """The default value of field ``name`` (the reference recipe's), e.g. ``TrainConfig.default("lr")``."""
        spec = cls.__dataclass_fields__[name]
        if spec.default_factory is not dataclasses.MISSING:
            return spec.default_factory()
        if spec.default is dataclasses.MISSING:
            raise ValueError(f"TrainConfig.{name} has no default: it must be given")
        return spec.default

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
