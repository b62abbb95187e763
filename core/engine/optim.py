"""Optimizers and learning-rate schedules (per step, as multipliers of each group's base learning rate)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from core.config import TrainConfig
from core.models.freeze import head_parameters


def build_optimizer(cfg: TrainConfig, model: nn.Module, net: nn.Module) -> torch.optim.Optimizer:
    """Head at lr, backbone at lr * backbone_lr_mult; no weight decay on biases and norm weights.

    `net` is what trains: the whole model, the part after a cached frozen prefix, or only the head (probe).
    """
    head = {id(p) for p in head_parameters(model)}
    groups = []
    for is_head, lr in ((True, cfg.lr), (False, cfg.lr * cfg.backbone_lr_mult)):
        params = [p for p in net.parameters() if (id(p) in head) == is_head]
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim > 1) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": lr, "weight_decay": cfg.weight_decay if decay else 0.0})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _cosine(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    warm = min(int(cfg.warmup_epochs / max(cfg.epochs, 1) * total), total // 2)
    return lambda t: (t + 1) / (warm + 1) if t < warm else \
        0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (t - warm) / max(1, total - warm)))


def _onecycle(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    up = max(1, int(0.25 * total))
    return lambda t: 0.04 + 0.96 * 0.5 * (1 - math.cos(math.pi * t / up)) if t < up else \
        1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * (t - up) / max(1, total - up)))


SCHEDULES = {
    "cosine": _cosine,
    "onecycle": _onecycle,
    "step": lambda cfg, total: lambda t: 0.1 ** ((t >= total // 2) + (t >= 3 * total // 4)),
    "constant": lambda cfg, total: lambda t: 1.0,
}
