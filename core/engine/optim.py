"""Optimizers and learning-rate schedules (multipliers of each group's base learning rate, by training progress)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from core.config import TrainConfig
from core.models.freeze import head_parameters


def param_groups(parts: list[tuple[list[nn.Parameter], float]], weight_decay: float) -> list[dict]:
    """Optimizer groups for (parameters, learning rate) parts: weight decay on weights, none on biases and norm
    weights (1-D); `base_lr` is what the schedules scale."""
    groups = []
    for params, lr in parts:
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim > 1) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": lr, "base_lr": lr,
                               "weight_decay": weight_decay if decay else 0.0})
    return groups


def build_optimizer(cfg: TrainConfig, model: nn.Module, net: nn.Module) -> torch.optim.Optimizer:
    """Head at lr, backbone at lr * backbone_lr_mult; no weight decay on biases and norm weights.

    `net` is what trains: the whole model, the part after a cached frozen prefix, or only the head (probe).
    """
    head = {id(p) for p in head_parameters(model)}
    groups = param_groups([([p for p in net.parameters() if id(p) in head], cfg.lr),
                           ([p for p in net.parameters() if id(p) not in head], cfg.lr * cfg.backbone_lr_mult)],
                          cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


# Schedules map training progress p (the fraction of all steps done once this step ends, 0 < p <= 1) to a
# multiplier of each group's base learning rate. Progress, not a step count: when a CUDA out-of-memory halves the
# batch, an epoch has twice the steps, and a step-count schedule would run past its end and climb back up.

def _cosine(cfg: TrainConfig) -> Callable[[float], float]:
    warm = min(cfg.warmup_epochs / max(cfg.epochs, 1), 0.5)
    return lambda p: p / warm if p < warm else 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (p - warm) / (1 - warm)))


def _onecycle(cfg: TrainConfig) -> Callable[[float], float]:
    up = 0.25
    return lambda p: 0.04 + 0.96 * 0.5 * (1 - math.cos(math.pi * p / up)) if p < up else \
        1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * (p - up) / (1 - up)))


SCHEDULES: dict[str, Callable[[TrainConfig], Callable[[float], float]]] = {
    "cosine": _cosine,
    "onecycle": _onecycle,
    "step": lambda cfg: lambda p: 0.1 ** ((p > 0.5) + (p > 0.75)),
    "constant": lambda cfg: lambda p: 1.0,
}


def set_lr(opt: torch.optim.Optimizer, multiplier: float) -> None:
    for group in opt.param_groups:
        group["lr"] = group["base_lr"] * multiplier
