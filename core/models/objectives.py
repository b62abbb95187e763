"""Objectives: "forward + loss for one batch", the one thing that differs between ways of training.

The epoch loop (core/engine/loop.py) calls `objective(net, batch)` inside autocast and backpropagates the loss it
returns; it never knows what the loss is. Plain classification is here today; distillation (soft targets of a
teacher), self-supervised adaptation and multi-task (a weighted sum of task losses) are further objectives with
the same call, so the loop stays one loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, differentiable
    size: int  # examples in the batch (weights the epoch's mean loss)
    correct: torch.Tensor | None = None  # examples classified right, on the device (None: not a classifier)


class Objective(Protocol):
    def __call__(self, net: nn.Module, batch: Any) -> StepOutput: ...


@dataclass(frozen=True)
class Classify:
    """Cross-entropy of the network's logits against integer labels, with label smoothing, or against soft
    targets (a batch mixed by Mixup / CutMix, core/data/augment.py)."""

    label_smoothing: float = 0.0

    def __call__(self, net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        x, y = batch
        logits = net(x)
        if y.ndim == 2:  # soft targets (Mixup / CutMix: smoothing already in them); right = the larger share
            loss = F.cross_entropy(logits.float(), y)
            return StepOutput(loss, len(y), (logits.detach().argmax(1) == y.argmax(1)).sum())
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        return StepOutput(loss, len(y), (logits.detach().argmax(1) == y).sum())
