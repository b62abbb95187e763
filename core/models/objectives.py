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
    labeled: torch.Tensor | None = None  # examples with a label (the accuracy's denominator); None: all `size`


class Objective(Protocol):
    def __call__(self, net: nn.Module, batch: Any) -> StepOutput: ...


@dataclass(frozen=True)
class Classify:
    """Cross-entropy of the network's logits against integer labels, with label smoothing."""

    label_smoothing: float = 0.0

    def __call__(self, net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        x, y = batch
        logits = net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        return StepOutput(loss, len(y), (logits.detach().argmax(1) == y).sum())


@dataclass(frozen=True)
class Distill:
    """Knowledge distillation (Hinton, Vinyals & Dean 2015): the labels' cross-entropy plus the KL divergence from
    a teacher's softened predictions, per example

        (1 - alpha) * CE(student, y; label smoothing) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

    averaged over the batch. T^2 keeps the soft term's gradients at the scale of the hard term's as T grows. The
    batch is (x, y, soft) with `soft` the teacher's probabilities at temperature T (core/engine/distill.py);
    unlabeled examples (y = -1) contribute the KL term only and are left out of the accuracy."""

    alpha: float = 0.5
    temperature: float = 2.0
    label_smoothing: float = 0.0

    def __call__(self, net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> StepOutput:
        x, y, soft = batch
        logits = net(x).float()
        return distill_loss(logits, y, soft, self)


def distill_loss(logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor, d: Distill) -> StepOutput:
    labeled = y >= 0
    ce = F.cross_entropy(logits, y.clamp_min(0), label_smoothing=d.label_smoothing, reduction="none")
    log_student = F.log_softmax(logits / d.temperature, dim=1)
    kl = (soft * (soft.clamp_min(1e-12).log() - log_student)).sum(1)  # KL(teacher || student) per example
    per_example = (1 - d.alpha) * ce * labeled + d.alpha * d.temperature ** 2 * kl
    correct = ((logits.detach().argmax(1) == y) & labeled).sum()
    return StepOutput(per_example.mean(), len(y), correct, labeled.sum())  # a tensor: no device sync per step
