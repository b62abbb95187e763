"""Objectives: "forward + loss for one batch", the one thing that differs between ways of training.

The epoch loop (core/engine/loop.py) calls `objective(net, batch)` inside autocast and backpropagates the loss it
returns; it never knows what the loss is. Plain classification is here today; distillation (soft targets of a
teacher), self-supervised adaptation and multi-task (a weighted sum of task losses) are further objectives with
the same call, so the loop stays one loop. `MultiTask` is the weighted sum of per-task cross-entropies.
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

    def reset(self) -> None:
        """Called at the start of every epoch: forget what the last one counted (most objectives count nothing)."""


@dataclass(frozen=True)
class Classify:
    """Cross-entropy of the network's logits against integer labels, with label smoothing, or against soft
    targets (a batch mixed by Mixup / CutMix, core/data/augment.py). `weight`: per-class loss weights (class-balanced
    training, core/engine/balance.py), on the logits' device; None = every image counts the same."""

    label_smoothing: float = 0.0
    weight: torch.Tensor | None = None

    def reset(self) -> None:
        pass

    def __call__(self, net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        x, y = batch
        logits = net(x)
        if y.ndim == 2:  # soft targets (Mixup / CutMix: smoothing already in them); right = the larger share
            loss = F.cross_entropy(logits.float(), y, weight=self.weight)
            return StepOutput(loss, len(y), (logits.detach().argmax(1) == y.argmax(1)).sum())
        loss = F.cross_entropy(logits.float(), y, weight=self.weight, label_smoothing=self.label_smoothing)
        return StepOutput(loss, len(y), (logits.detach().argmax(1) == y).sum())


@dataclass
class MultiTask:
    """Several classification tasks on one network (core/models/multitask.py: a tuple of logits, one per task).

    batch = (x, y) with y of shape N x tasks and -1 where an image has no label for a task. The loss is
    sum_t weights[t] * (cross-entropy of task t over the images labeled for it, divided by their number), so a
    task with few labels in a batch is not drowned by one with many, and a task with none adds nothing. `correct`
    counts images whose every labeled task is right (the joint accuracy). `tally` holds each task's (right,
    labeled) counts since reset(), on the device: per-task training accuracy without a sync per batch.
    """

    weights: tuple[float, ...]
    label_smoothing: float = 0.0
    tally: torch.Tensor | None = None

    def reset(self) -> None:
        self.tally = None

    def __call__(self, net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        x, y = batch
        outputs = net(x)
        loss = torch.zeros((), device=y.device)
        all_right = torch.ones(len(y), dtype=torch.bool, device=y.device)
        tally = torch.zeros(len(self.weights), 2, dtype=torch.long, device=y.device)
        for t, (logits, w) in enumerate(zip(outputs, self.weights, strict=True)):
            yt, labeled = y[:, t], y[:, t] >= 0
            n = labeled.sum()
            task_loss = F.cross_entropy(logits.float(), yt, ignore_index=-1, reduction="sum",
                                        label_smoothing=self.label_smoothing) / n.clamp(min=1)
            loss = loss + w * task_loss
            right = logits.detach().argmax(1) == yt
            all_right &= right | ~labeled
            tally[t, 0], tally[t, 1] = (right & labeled).sum(), n
        self.tally = tally if self.tally is None else self.tally + tally
        return StepOutput(loss, len(y), all_right.sum())


@dataclass(frozen=True)
class Distill:
    """Knowledge distillation (Hinton, Vinyals & Dean 2015): the labels' cross-entropy plus the KL divergence from
    a teacher's softened predictions, per example

        (1 - alpha) * CE(student, y; label smoothing) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

    averaged over the batch. T^2 keeps the soft term's gradients at the scale of the hard term's as T grows. The
    batch is (x, y, soft) with `soft` the teacher's probabilities at temperature T (core/engine/teachers.py);
    unlabeled examples (y = -1) contribute the KL term only and are left out of the accuracy."""

    alpha: float = 0.5
    temperature: float = 2.0
    label_smoothing: float = 0.0

    def reset(self) -> None:
        pass

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
