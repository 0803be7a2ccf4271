"""Training: the reference recipe by default, iteration-based, exactly resumable, DDP under torchrun.

``fit(TrainConfig(...))`` trains, evaluates periodically, and writes ``last.pt`` / ``best.pt``
checkpoints (atomic, weights-only loadable) plus ``metrics.csv`` into ``config.out``.

Reproducibility: the data a step sees is a pure function of (seed, iteration) - the sample order of
an epoch comes from (seed, epoch) and each sample's augmentation from (seed, epoch, index) - and the
learning rate is a pure function of the iteration, so a run stopped and resumed with ``resume=True``
reproduces the uninterrupted run's losses on the CPU.

The pieces live beside this module, one job each: :mod:`ssd_train.config` (TrainConfig, recipes),
:mod:`ssd_train.optim` (optimizer, schedule), :mod:`ssd_train.ema`, :mod:`ssd_train.state` (checkpointed
state, resume), :mod:`ssd_train.distributed` (torchrun, the global-batch sampler),
:mod:`ssd_train.evaluation` and :mod:`ssd_train.run_log` (metrics.csv, progress). Their public names are
re-exported here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ssd_runtime.image_check import CACHE_FILE
from ssd_runtime.priors import PRIOR_PRESETS, PriorConfig
from ssd_runtime.spec import ModelSpec
from ssd_train.config import (
    AMP_MODES, DEVICES, HEAD_INITS, OPTIMIZERS, RECIPE_NAMES, RECIPES, SCHEDULES, TrainConfig, TrainingError,
)  # fmt: skip
from ssd_train.data import Collate, UInt8View, VOCDetection, normalize_batch, seed_worker
from ssd_train.distributed import DistInfo, GlobalBatchSampler, init_distributed
from ssd_train.ema import ModelEMA
from ssd_train.evaluation import eval_dataset, evaluate
from ssd_train.loss import MultiBoxLoss
from ssd_train.model import SSD300
from ssd_train.optim import build_optimizer, lr_factor, set_learning_rate
from ssd_train.run_log import LossMeter, RunLog, stderr_note
from ssd_train.state import TrainingState, init_from_checkpoint, seed_everything
from ssd_train.training_set import load_training_set

__all__ = [
    "AMP_MODES", "DEVICES", "HEAD_INITS", "OPTIMIZERS", "RECIPES", "RECIPE_NAMES", "SCHEDULES", "FitResult",
    "GlobalBatchSampler", "ModelEMA", "TrainConfig", "TrainingError", "build_optimizer", "evaluate", "fit",
    "lr_factor",
]  # fmt: skip


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
    classes: list[str] = field(default_factory=list)  # trained, background left out
    class_source: str = ""  # ssd_train.training_set.TrainingSetReport.class_source
    image_check: dict | None = None  # ssd_runtime.image_check.ImageCheckReport.to_dict()


def fit(config: TrainConfig) -> FitResult:
    """Train SSD300 as configured; see the module docstring."""
    dist_info = init_distributed(config.device)
    device = _training_device(config, dist_info)
    out = Path(config.out)
    last_path, best_path = out / "last.pt", out / "best.pt"
    train_set, data_report = load_training_set(
        config.data, classes=config.classes, skip_unknown_classes=config.skip_unknown_classes,
        check_images=config.check_images, skip_bad_images=config.skip_bad_images, cache_path=out / CACHE_FILE,
        update_cache=dist_info.main, check_workers=max(2, config.workers),
        note=stderr_note if dist_info.main else None, seed=config.seed, augment=config.augment,
    )  # fmt: skip
    spec = ModelSpec.create(train_set.class_names, width=config.width, norm=config.norm,
                            priors=PriorConfig(**PRIOR_PRESETS[config.priors], clip=config.prior_clip))
    model, reinitialised = _build_model(config, spec, device)
    state = TrainingState(config, model, build_optimizer(model, config),
                          torch.amp.GradScaler("cuda", enabled=config.amp == "fp16"),
                          ModelEMA(model, config.ema) if config.ema else None)
    if config.resume:
        state.resume(last_path, spec)
    start_iteration = state.iteration

    def result(seconds: float, images_per_s: float) -> FitResult:
        return FitResult(state.iteration, str(last_path), str(best_path) if best_path.exists() else None,
                         state.best_map, state.history, seconds, images_per_s, state.iteration < config.iterations,
                         **data_report.to_dict())

    if start_iteration >= config.iterations:
        return result(0.0, 0.0)
    spec = spec.with_provenance(
        trained_by="ssd-train fit", data=";".join(str(Path(d).resolve()) for d in config.data),
        **({"init_from": config.init_from} if config.init_from else {}),
    )
    step = _Step(state, _data_parallel(model, config, dist_info, device), device, train_set.mean, train_set.std)
    loader = _train_loader(config, train_set, dist_info, start_iteration)
    eval_set = eval_dataset(config, train_set.class_names, spec) if config.eval_every and dist_info.main else None
    stop_at = min(config.iterations, config.stop_at if config.stop_at is not None else config.iterations)
    log = RunLog(out / "metrics.csv", enabled=dist_info.main, append=config.resume, progress=config.progress,
                 total=min(config.iterations, config.stop_at or config.iterations), initial=start_iteration)
    if reinitialised:
        log.note(f"init-from {config.init_from}: class list differs, re-initialised {len(reinitialised)} class-head tensors")
    model.train()
    start_time = time.perf_counter()
    meter = LossMeter(device)
    for images, boxes, labels, _difficult in loader:
        lr_now = set_learning_rate(state.optimizer, config, state.iteration)
        meter.add(step(images, boxes, labels), state.iteration + 1, images.shape[0] * dist_info.world)
        state.iteration += 1
        iteration = state.iteration
        log.step()
        evaluate_now = eval_set is not None and (iteration % config.eval_every == 0 or iteration == config.iterations)
        save_now = dist_info.main and (iteration % config.save_every == 0 or iteration == stop_at)
        log_now = iteration % config.log_every == 0 or iteration == stop_at
        if log_now or iteration >= stop_at or evaluate_now or save_now:
            _raise_if_bad(meter, config, last_path)
        if log_now:
            log.log(meter.row(iteration, lr_now))
        if evaluate_now:
            _evaluate(state, eval_set, spec, device, log, best_path if dist_info.main else None)
        if save_now:
            state.save(last_path, spec)
        if iteration >= stop_at:
            break
    seconds = time.perf_counter() - start_time
    if dist_info.world > 1:
        torch.distributed.barrier()
    log.close()
    return result(seconds, (state.iteration - start_iteration) * config.batch_size / max(seconds, 1e-9))


class _Step:
    """One optimisation step: normalize on the device, forward (AMP), loss, backward, clip, step, EMA."""

    def __init__(self, state: TrainingState, network: torch.nn.Module, device: torch.device,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        config = state.config
        self.state, self.network, self.device, self.mean, self.std = state, network, device, mean, std
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        self.criterion = MultiBoxLoss(state.model.priors_cxcy, threshold=config.match_threshold,
                                      loc_loss=config.loc_loss).to(device)

    def __call__(self, images: torch.Tensor, boxes: list[torch.Tensor], labels: list[torch.Tensor]) -> torch.Tensor:
        """Train on one batch (uint8 images (N, 3, H, W)); return (total, loc, conf) float32 on the device."""
        state, config = self.state, self.state.config
        images = normalize_batch(images.to(self.device, non_blocking=True), self.mean, self.std)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        # boxes and labels stay on the CPU: the loss pads and checks them there and moves them once
        amp = self.amp_dtype
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            locs, logits = self.network(images)
        parts = self.criterion(locs, logits, boxes, labels)
        # No host sync per step: finiteness and loss sums stay on the device (LossMeter); the first
        # non-finite iteration is checked at every log step and before any checkpoint or evaluation,
        # so a NaN never reaches a checkpoint and the GPU queue never drains.
        values = torch.stack([parts.total.detach(), parts.loc.detach(), parts.conf.detach()]).float()
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(parts.total).backward()
        if config.grad_clip:
            state.scaler.unscale_(state.optimizer)
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        if state.ema is not None:
            state.ema.update(state.model)
        return values


def _training_device(config: TrainConfig, dist_info: DistInfo) -> torch.device:
    """The device this process trains on, set up (cuDNN autotuning on CUDA, no denormals on the CPU)."""
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
    return device


def _build_model(config: TrainConfig, spec: ModelSpec, device: torch.device) -> tuple[SSD300, list[str]]:
    """The seeded, initialised network on ``device``, and the class-head tensors ``init_from`` left out."""
    seed_everything(config.seed)
    model = SSD300.from_spec(spec, vgg_weights=config.vgg_weights)
    if config.head_init == "background":
        model.init_class_heads_background()
    reinitialised: list[str] = []
    if config.init_from and not config.resume:
        reinitialised = init_from_checkpoint(model, config.init_from, spec.class_names)
    model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, reinitialised


def _data_parallel(model: SSD300, config: TrainConfig, dist_info: DistInfo, device: torch.device) -> torch.nn.Module:
    """The module the step calls: ``model``, or its DistributedDataParallel wrapper under torchrun."""
    network: torch.nn.Module = model
    if dist_info.world > 1:
        network = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.batch_size % dist_info.world:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {dist_info.world} processes")
    return network


def _train_loader(config: TrainConfig, train_set: VOCDetection, dist_info: DistInfo, start_iteration: int) -> DataLoader:
    """This process's uint8 batches of each global batch, from ``start_iteration`` on (endless)."""
    sampler = GlobalBatchSampler(len(train_set), config.batch_size, seed=config.seed,
                                 rank=dist_info.rank, world=dist_info.world)
    sampler.start_iteration = start_iteration
    return DataLoader(
        UInt8View(train_set), batch_size=sampler.per_rank, sampler=sampler, num_workers=config.workers,
        collate_fn=Collate(train_set.mean, train_set.std, normalize=False),  # uint8: normalized on the device
        worker_init_fn=seed_worker if config.workers else None, pin_memory=config.device == "cuda",
        generator=torch.Generator().manual_seed(config.seed + 7919 * dist_info.rank),
        persistent_workers=False, prefetch_factor=4 if config.workers else None,
    )


def _evaluate(state: TrainingState, eval_set: VOCDetection, spec: ModelSpec, device: torch.device, log: RunLog,
              best_path: Path | None) -> None:
    """Evaluate the kept weights, record the mAP, and write ``best_path`` (when given) on a new best."""
    config = state.config
    result = evaluate(state.kept, eval_set, spec, device, config.eval_batch_size, channels_last=config.channels_last)
    state.model.train()
    state.history.append({"iteration": state.iteration, "map": result.map})
    log.log({"iteration": state.iteration, "map": result.map})
    if state.best_map is None or result.map > state.best_map:
        state.best_map = result.map
        if best_path is not None:
            state.save(best_path, spec)


def _raise_if_bad(meter: LossMeter, config: TrainConfig, last_path: Path) -> None:
    """Stop with the first non-finite iteration and its loss parts (one host sync)."""
    bad = meter.first_bad()
    if bad is None:
        return
    iteration, (total, loc, conf) = bad
    raise TrainingError(
        f"non-finite loss at iteration {iteration}: total {total}, loc {loc}, conf {conf}, "
        f"lr {config.lr * lr_factor(config, iteration - 1):g}; no checkpoint was written from it (the last good "
        f"one is {last_path}). Lower the learning rate, add --warmup or --grad-clip, then --resume"
    )
