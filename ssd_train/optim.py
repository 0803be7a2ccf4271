"""Optimizer and learning-rate schedule of a training run: a pure function of the iteration."""
from __future__ import annotations

import math

import torch

from ssd_train.config import TrainConfig


def lr_factor(config: TrainConfig, iteration: int) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based): warm-up, then step or cosine."""
    if config.warmup and iteration < config.warmup:
        alpha = iteration / config.warmup
        return config.warmup_factor * (1 - alpha) + alpha
    if config.schedule == "cosine":
        progress = (iteration - config.warmup) / max(1, config.iterations - config.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr_gamma ** sum(iteration >= step for step in config.lr_steps)


def set_learning_rate(optimizer: torch.optim.Optimizer, config: TrainConfig, iteration: int) -> float:
    """Set every parameter group to its ``base_lr`` x :func:`lr_factor`; return the base learning rate now."""
    factor = lr_factor(config, iteration)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return config.lr * factor


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
