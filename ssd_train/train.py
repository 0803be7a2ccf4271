"""Training: the reference recipe by default, iteration-based, exactly resumable, DDP under torchrun.

``fit(TrainConfig(...))`` trains, evaluates periodically, and writes ``last.pt`` / ``best.pt``
checkpoints (atomic, weights-only loadable) plus ``metrics.csv`` into ``config.out``.

Reproducibility: the data a step sees is a pure function of (seed, iteration) - the sample order of
an epoch comes from (seed, epoch) and each sample's augmentation from (seed, epoch, index) - and the
learning rate is a pure function of the iteration, so a run stopped and resumed with ``resume=True``
reproduces the uninterrupted run's losses on the CPU.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ssd_runtime.priors import PRIOR_PRESETS, PriorConfig
from ssd_runtime.errors import ToolkitError
from ssd_runtime.spec import NORMS, ModelSpec
from ssd_train.augment import AUGMENTATIONS
from ssd_train.checkpoint import load_checkpoint, save_checkpoint
from ssd_train.data import Collate, UInt8View, VOCDetection, collate, normalize_batch, seed_worker
from ssd_train.loss import MultiBoxLoss
from ssd_train.model import SSD300

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine")
HEAD_INITS = ("reference", "background")
AMP_MODES = ("none", "bf16", "fp16")


class TrainingError(ToolkitError, RuntimeError):
    """Training cannot go on (a non-finite loss, a resume that does not fit the run)."""


@dataclass
class TrainConfig:
    """One training run. Defaults are the reference recipe (SGD, lr 1e-3, 120k iterations at batch 32).

    data: VOC roots (a VOCdevkit reads VOC2007+VOC2012 trainval for training and VOC2007 test for
        evaluation) or the folder of a generated dataset.
    classes: class names without background; ``None`` reads them from the dataset.
    skip_unknown_classes: drop objects whose class is not in ``classes`` (counted) instead of failing.
    norm: "none" (the reference network), "batch" (BatchNorm after each conv) or "batch-from-conv2"
        (not after conv1_1/conv1_2); see ``SSD300``.
    head_init: "reference" (Xavier) or "background" (``SSD300.init_class_heads_background``).
    augment: "reference", "light" (no zoom-out) or "flip" (resize + flip): ``ssd_train.augment.AUGMENTATIONS``.
    priors: prior geometry, a name in ``ssd_runtime.priors.PRIOR_PRESETS`` ("reference" or "coco",
        smaller priors); ``prior_clip`` picks how they are clipped.
    match_threshold: IoU at or above which a prior is matched to an object (0.5, the paper's; each object's
        best prior is matched whatever its IoU). The quick start uses 0.4: more positives per object.
    lr_steps: iterations at which the learning rate is multiplied by ``lr_gamma`` ("step" schedule).
    warmup: iterations of linear warm-up from ``warmup_factor * lr``.
    ema: decay of an exponential moving average of the weights (0 = off; see :class:`ModelEMA`). When on,
        checkpoints and evaluations hold the averaged weights, and the training weights travel in the
        checkpoint's training state for ``resume``.
    batch_size: the global batch; under torchrun each of the W processes takes batch_size / W.
    eval_every / save_every / log_every: iterations (0 disables periodic evaluation).
    eval_images: evaluate on at most this many test images (0 = all).
    """

    data: list[str]
    out: str
    classes: list[str] | None = None
    skip_unknown_classes: bool = False
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
            ("priors", self.priors, tuple(PRIOR_PRESETS)),
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def lr_factor(config: TrainConfig, iteration: int) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based): warm-up, then step or cosine."""
    if config.warmup and iteration < config.warmup:
        alpha = iteration / config.warmup
        return config.warmup_factor * (1 - alpha) + alpha
    if config.schedule == "cosine":
        progress = (iteration - config.warmup) / max(1, config.iterations - config.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr_gamma ** sum(iteration >= step for step in config.lr_steps)


class GlobalBatchSampler(Sampler):
    """Yields ``(epoch, index)`` keys of one process's share of each global batch, from an iteration on.

    The order of an epoch is a permutation seeded by (seed, epoch); global batch b of the epoch is
    order[b*G:(b+1)*G] (G = the global batch, incomplete batches dropped), and process ``rank`` of
    ``world`` takes its slice. One process and W processes therefore see the same global batches.
    """

    def __init__(self, num_items: int, global_batch: int, *, seed: int, rank: int = 0, world: int = 1) -> None:
        if num_items < global_batch:
            raise ValueError(f"the training set has {num_items} images, fewer than one batch of {global_batch}")
        self.num_items, self.global_batch, self.seed = num_items, global_batch, seed
        self.rank, self.world = rank, world
        self.per_rank = global_batch // world
        self.batches_per_epoch = num_items // global_batch
        self.start_iteration = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        iteration = self.start_iteration
        while True:
            epoch, batch = divmod(iteration, self.batches_per_epoch)
            order = np.random.default_rng([self.seed, epoch, 0x5A]).permutation(self.num_items)
            for b in range(batch, self.batches_per_epoch):
                chunk = order[b * self.global_batch : (b + 1) * self.global_batch]
                for index in chunk[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]:
                    yield (epoch, int(index))
            iteration = (epoch + 1) * self.batches_per_epoch


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> _Dist:
    """Join the torchrun process group when launched by torchrun (RANK/WORLD_SIZE set)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return _Dist()
    import torch.distributed as dist

    backend = "nccl" if device == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def _rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
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


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (or AdamW) with the reference's parameter groups: biases at ``bias_lr_factor`` x lr."""
    biases = [p for n, p in model.named_parameters() if n.endswith(".bias")]
    others = [p for n, p in model.named_parameters() if not n.endswith(".bias")]
    groups = [
        {"params": biases, "base_lr": config.lr * config.bias_lr_factor, "lr": config.lr * config.bias_lr_factor},
        {"params": others, "base_lr": config.lr, "lr": config.lr},
    ]
    # fused: one kernel for all parameters (AdamW's step at width 0.125 on the CPU: 6.3 ms -> 1.0 ms)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               fused=True)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, fused=True)


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


def _init_from(model: SSD300, path: str, class_names: tuple[str, ...]) -> list[str]:
    """Copy weights from a checkpoint; class heads are left re-initialised when the class list differs."""
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


@dataclass
class FitResult:
    """What a run produced: final iteration, the last evaluation, best mAP and checkpoint paths."""

    iteration: int
    last_checkpoint: str
    best_checkpoint: str | None
    best_map: float | None
    history: list[dict[str, float]]
    seconds: float
    images_per_s: float
    stopped_early: bool = False


def fit(config: TrainConfig) -> FitResult:
    """Train SSD300 as configured; see the module docstring."""
    dist_info = _init_distributed(config.device)
    device = torch.device(config.device, dist_info.local_rank) if config.device == "cuda" else torch.device("cpu")
    if config.device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but torch sees no CUDA device")
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    if device.type == "cpu":
        # Adam's second moments and small gradients underflow into denormals, which are 10x slower
        # on x86 CPUs (measured: the optimizer step went from 1.37 s to 0.15 s at width 0.125).
        torch.set_flush_denormal(True)
    out = Path(config.out)
    last_path, best_path = out / "last.pt", out / "best.pt"

    train_set = VOCDetection.from_voc(
        config.data, "trainval",
        class_names=_with_background(config.classes), train=True, seed=config.seed,
        skip_unknown=config.skip_unknown_classes, augment=config.augment,
    )  # fmt: skip
    class_names = train_set.class_names
    spec = ModelSpec.create(class_names, width=config.width, norm=config.norm, priors=PriorConfig(**PRIOR_PRESETS[config.priors], clip=config.prior_clip))

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    model = SSD300.from_spec(spec, vgg_weights=config.vgg_weights)
    if config.head_init == "background":
        model.init_class_heads_background()
    reinitialised: list[str] = []
    if config.init_from and not config.resume:
        reinitialised = _init_from(model, config.init_from, class_names)
    model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16")
    ema = ModelEMA(model, config.ema) if config.ema else None
    # what checkpoints hold and evaluations measure: the averaged weights when there are any
    kept = model if ema is None else ema.module

    start_iteration, best_map, history = 0, None, []
    if config.resume:
        start_iteration, best_map, history = _resume(last_path, config, model, optimizer, scaler, spec, ema)
    if start_iteration >= config.iterations:
        return FitResult(start_iteration, str(last_path), str(best_path) if best_path.exists() else None,
                         best_map, history, 0.0, 0.0)
    spec = spec.with_provenance(
        trained_by="ssd-train fit", data=";".join(str(Path(d).resolve()) for d in config.data),
        **({"init_from": config.init_from} if config.init_from else {}),
    )

    train_model: torch.nn.Module = model
    if dist_info.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.batch_size % dist_info.world:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {dist_info.world} processes")
    sampler = GlobalBatchSampler(len(train_set), config.batch_size, seed=config.seed,
                                 rank=dist_info.rank, world=dist_info.world)
    sampler.start_iteration = start_iteration
    loader = DataLoader(
        UInt8View(train_set), batch_size=sampler.per_rank, sampler=sampler, num_workers=config.workers,
        collate_fn=Collate(train_set.mean, train_set.std, normalize=False),  # uint8: normalized on the device
        worker_init_fn=seed_worker if config.workers else None, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed + 7919 * dist_info.rank),
        persistent_workers=False, prefetch_factor=4 if config.workers else None,
    )
    criterion = MultiBoxLoss(model.priors_cxcy, threshold=config.match_threshold, loc_loss=config.loc_loss).to(device)
    eval_set = None
    if config.eval_every and dist_info.main:
        eval_set = _eval_dataset(config, class_names, spec)

    metrics_file = out / "metrics.csv"
    logger = _Logger(metrics_file, enabled=dist_info.main, append=config.resume and metrics_file.exists())
    if reinitialised and dist_info.main:
        logger.note(f"init-from {config.init_from}: class list differs, re-initialised {len(reinitialised)} class-head tensors")
    bar = _progress(config, start_iteration, enabled=dist_info.main)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
    model.train()
    start_time = time.perf_counter()
    window_start, window_images = start_time, 0
    stop_at = min(config.iterations, config.stop_at if config.stop_at is not None else config.iterations)
    iteration = start_iteration
    loss_sums = torch.zeros(3, device=device)
    window_steps = 0
    bad_iteration = torch.full((), -1, dtype=torch.long, device=device)
    bad_values = torch.zeros(3, device=device)
    for images, boxes, labels, _difficult in loader:
        factor = lr_factor(config, iteration)
        lr_now = config.lr * factor
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        images = normalize_batch(images.to(device, non_blocking=True), train_set.mean, train_set.std)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        # boxes and labels stay on the CPU: the loss pads and checks them there and moves them once
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            locs, logits = train_model(images)
        parts = criterion(locs, logits, boxes, labels)
        # No host sync per step: finiteness and loss sums stay on the device; the first non-finite
        # iteration is recorded there and checked at every log step and before any checkpoint or
        # evaluation, so a NaN never reaches a checkpoint and the GPU queue never drains.
        values = torch.stack([parts.total.detach(), parts.loc.detach(), parts.conf.detach()]).float()
        first_bad = (bad_iteration < 0) & ~torch.isfinite(values).all()
        bad_iteration = torch.where(first_bad, iteration + 1, bad_iteration)
        bad_values = torch.where(first_bad, values, bad_values)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(parts.total).backward()
        if config.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            ema.update(model)
        iteration += 1
        window_images += images.shape[0] * dist_info.world
        loss_sums += values
        window_steps += 1
        if bar is not None:
            bar.update(1)
        evaluate_now = eval_set is not None and (iteration % config.eval_every == 0 or iteration == config.iterations)
        save_now = dist_info.main and (iteration % config.save_every == 0 or iteration == stop_at)
        if iteration % config.log_every == 0 or iteration >= stop_at or evaluate_now or save_now:
            _raise_if_bad(bad_iteration, bad_values, config, last_path)
        if iteration % config.log_every == 0 or iteration == stop_at:
            now = time.perf_counter()
            means = (loss_sums / window_steps).tolist()
            row = dict(zip(("loss", "loc", "conf"), means))
            row.update(iteration=iteration, lr=lr_now, images_per_s=window_images / max(now - window_start, 1e-9))
            loss_sums.zero_()
            window_start, window_images, window_steps = now, 0, 0
            logger.log(row)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.3f}", loc=f"{row['loc']:.3f}", conf=f"{row['conf']:.3f}",
                                lr=f"{lr_now:.2g}", img_s=f"{row['images_per_s']:.1f}")
        if evaluate_now:
            result = evaluate(kept, eval_set, spec, device, config.eval_batch_size, channels_last=config.channels_last)
            model.train()
            history.append({"iteration": iteration, "map": result.map})
            logger.log({"iteration": iteration, "map": result.map})
            if best_map is None or result.map > best_map:
                best_map = result.map
                if dist_info.main:
                    save_checkpoint(best_path, kept, spec, _training_state(
                        config, iteration, model, optimizer, scaler, ema, best_map, history))
        if save_now:
            save_checkpoint(last_path, kept, spec, _training_state(
                config, iteration, model, optimizer, scaler, ema, best_map, history))
        if iteration >= stop_at:
            break
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start_time
    images_seen = (iteration - start_iteration) * config.batch_size
    if dist_info.world > 1:
        torch.distributed.barrier()
    logger.close()
    return FitResult(
        iteration=iteration, last_checkpoint=str(last_path),
        best_checkpoint=str(best_path) if best_path.exists() else None, best_map=best_map, history=history,
        seconds=seconds, images_per_s=images_seen / max(seconds, 1e-9), stopped_early=iteration < config.iterations,
    )


def _raise_if_bad(bad_iteration: torch.Tensor, bad_values: torch.Tensor, config: TrainConfig, last_path: Path) -> None:
    """Stop with the first non-finite iteration and its loss parts (one host sync)."""
    iteration = int(bad_iteration)
    if iteration < 0:
        return
    total, loc, conf = bad_values.tolist()
    raise TrainingError(
        f"non-finite loss at iteration {iteration}: total {total}, loc {loc}, conf {conf}, "
        f"lr {config.lr * lr_factor(config, iteration - 1):g}; no checkpoint was written from it (the last good "
        f"one is {last_path}). Lower the learning rate, add --warmup or --grad-clip, then --resume"
    )


def _with_background(classes: list[str] | None) -> tuple[str, ...] | None:
    if classes is None:
        return None
    names = [c for c in classes if c != "background"]
    return ("background", *names)


def _eval_dataset(config: TrainConfig, class_names: tuple[str, ...], spec: ModelSpec) -> VOCDetection:
    test_set = VOCDetection.from_voc(config.data, "test", class_names=class_names, train=False,
                                     skip_unknown=config.skip_unknown_classes, mean=spec.mean, std=spec.std, size=spec.input_size)
    if config.eval_images and config.eval_images < len(test_set):
        test_set.records = test_set.records[: config.eval_images]
    return test_set


def _training_state(config, iteration, model, optimizer, scaler, ema, best_map, history) -> dict[str, Any]:
    state = {
        "iteration": iteration,
        "config": config.to_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": _rng_state(),
        "best_map": best_map,
        "history": history,
    }
    if ema is not None:  # the checkpoint's model is the average; the training weights go on from here
        state["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        state["ema_updates"] = ema.updates
    return state


def _resume(path: Path, config: TrainConfig, model, optimizer, scaler, spec: ModelSpec, ema: ModelEMA | None):
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint to resume at {path}; start without --resume")
    checkpoint = load_checkpoint(path)
    training = checkpoint.training or {}
    saved = training.get("config", {})
    differ = [f"{k}: {saved.get(k)!r} -> {getattr(config, k)!r}" for k in TrainConfig.RUN_FIELDS
              if k in saved and saved.get(k) != getattr(config, k)]
    if differ:
        raise TrainingError(f"--resume {path}: the run was started with other settings ({'; '.join(differ)}); "
                            "resume with the same settings or start a new --out folder")
    if checkpoint.spec.class_names != spec.class_names or checkpoint.spec.priors_sha256 != spec.priors_sha256:
        raise TrainingError(f"--resume {path}: the checkpoint's classes or priors differ from this run's data")
    if ema is None:
        model.load_state_dict(checkpoint.model_state)
    else:
        if "model" not in training:
            raise TrainingError(f"--resume {path}: the run was trained without --ema; resume it without --ema")
        model.load_state_dict(training["model"])
        ema.module.load_state_dict(checkpoint.model_state)
        ema.updates = int(training["ema_updates"])
    optimizer.load_state_dict(training["optimizer"])
    scaler.load_state_dict(training["scaler"])
    _set_rng_state(training["rng"])
    return int(training["iteration"]), training.get("best_map"), list(training.get("history", []))


@torch.no_grad()
def evaluate(
    model: SSD300,
    dataset: VOCDetection,
    spec: ModelSpec,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    *,
    ap_method: str = "11point",
    channels_last: bool = False,
    workers: int = 0,
):
    """VOC mAP of ``model`` on ``dataset`` at the spec's evaluation settings (the one NumPy metric).

    The postprocess is the NumPy one on the CPU and the torch reference on a GPU (identical detections).
    """
    from ssd_runtime.metric import GroundTruth, voc_map
    from ssd_runtime.postprocess import postprocess
    from ssd_runtime.postprocess_torch import postprocess_torch

    device = torch.device(device)
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    priors = model.priors_cxcy.cpu().numpy()
    detections, truths = [], []
    for images, boxes, labels, difficult in loader:
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        locs, logits = model(images)
        if device.type == "cpu":  # the NumPy implementation: identical detections (tested), much faster on a CPU
            detections.extend(postprocess(locs.float().numpy(), logits.float().numpy(), priors, spec.evaluation,
                                          spec.variances))
        else:
            detections.extend(postprocess_torch(locs.float(), logits.float(), model.priors_cxcy, spec.evaluation,
                                                spec.variances))
        truths.extend(GroundTruth.create(b.numpy(), lab.numpy(), d.numpy()) for b, lab, d in zip(boxes, labels, difficult))
    model.train(was_training)
    return voc_map(detections, truths, spec.class_names, ap_method=ap_method)


class _Logger:
    """metrics.csv (one row per log step or evaluation) and TensorBoard when it is installed."""

    COLUMNS = ("iteration", "loss", "loc", "conf", "lr", "images_per_s", "map")

    def __init__(self, path: Path, *, enabled: bool, append: bool) -> None:
        self.enabled = enabled
        self.tensorboard = None
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a" if append else "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.COLUMNS)
        if not append:
            self.writer.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(path.parent / "tensorboard"))
        except ImportError:
            pass

    def log(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.writer.writerow({k: row.get(k, "") for k in self.COLUMNS})
        self.file.flush()
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "iteration":
                    self.tensorboard.add_scalar(key, value, row["iteration"])

    def note(self, text: str) -> None:
        print(text, flush=True)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tensorboard is not None:
                self.tensorboard.close()


def _progress(config: TrainConfig, start: int, *, enabled: bool):
    if not (enabled and config.progress):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=min(config.iterations, config.stop_at or config.iterations), initial=start,
                desc="train", unit="it", dynamic_ncols=True)
