"""Multi-task networks: one shared timm backbone (image -> pooled features) and one linear head per task.

`MultiHead` returns a tuple of logits, one per task, in task order. Freezing works as for one task (the policy of
core/models/freeze.py applied to the backbone; the heads always train). `task_model` turns the shared backbone and
one head back into a plain timm classifier: what each task's bundle holds, loadable alone with timm's local-dir.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from core.config import TrainConfig
from core.models import backbones, freeze


class MultiHead(nn.Module):
    """trunk(x) -> pooled features -> one nn.Linear per task; forward returns a tuple of logits."""

    def __init__(self, trunk: nn.Module, num_features: int, num_classes: list[int], heads: nn.ModuleList | None = None):
        super().__init__()
        self.trunk = trunk
        self.heads = heads if heads is not None else nn.ModuleList(nn.Linear(num_features, n) for n in num_classes)
        if heads is None:
            for head in self.heads:  # like the single-task head: no random opinion before it has seen data
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled = self.trunk(x)
        return tuple(head(pooled) for head in self.heads)

    def get_classifier(self) -> nn.Module:
        """The heads, under timm's name: the optimizer gives them the head learning rate (core/engine/optim.py)."""
        return self.heads

    def with_trunk(self, trunk: nn.Module) -> MultiHead:
        """The same heads (shared parameters) on another trunk: identity on cached features, or the network after
        a cached frozen prefix."""
        return MultiHead(trunk, 0, [], heads=self.heads)


class WithPooled(nn.Module):
    """(*logits, pooled features) in one pass: what the end of the run scores and keeps."""

    def __init__(self, net: MultiHead):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled = self.net.trunk(x)
        return (*(head(pooled) for head in self.net.heads), pooled)


class Probabilities(nn.Module):
    """Softmax of every task's logits divided by that task's calibration temperature (1 = none): the multi-output
    exports' contract (a tuple, one entry per task)."""

    def __init__(self, net: MultiHead, temperatures: list[float] | None = None):
        super().__init__()
        self.net = net
        self.temperatures = [float(t) for t in temperatures] if temperatures else [1.0] * len(net.heads)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple((logits / t).softmax(-1) for logits, t in zip(self.net(x), self.temperatures, strict=True))


def create_multitask_model(cfg: TrainConfig, num_classes: list[int]) -> MultiHead:
    """cfg's pretrained backbone (its classifier removed: forward gives pooled features) and a head per task."""
    backbone = backbones.create_model(cfg, 2)  # the weight loaders expect a classifier; it is dropped next
    backbone.reset_classifier(0)
    return MultiHead(backbone, backbone.num_features, num_classes)


def apply_freeze(model: MultiHead, cfg: TrainConfig) -> int:
    """The freeze policy on the shared backbone (probe / partial / full); every head trains."""
    n = freeze.apply_freeze(model.trunk, cfg, epoch=0)
    for p in model.heads.parameters():
        p.requires_grad_(True)
    return n


def multitask_from_task_models(models: list[nn.Module]) -> MultiHead:
    """The inverse of task_model: one MultiHead from task classifiers that share their backbone (the task bundles
    of one run); the first model's backbone, each model's classifier as its task's head."""
    trunk = copy.deepcopy(models[0]).eval()
    trunk.reset_classifier(0)
    heads = nn.ModuleList()
    for m in models:
        c = m.get_classifier()
        head = nn.Linear(c.in_features, c.out_features)
        with torch.no_grad():
            head.weight.copy_(c.weight)
            head.bias.copy_(c.bias)
        heads.append(head)
    return MultiHead(trunk, 0, [], heads=heads).eval()


def task_model(model: MultiHead, task: int) -> nn.Module:
    """A plain timm classifier: the shared backbone with task `task`'s head as its classifier (a copy, on the CPU)."""
    head = model.heads[task]
    out = copy.deepcopy(model.trunk).to("cpu")
    out.reset_classifier(head.out_features)
    classifier = out.get_classifier()
    with torch.no_grad():
        classifier.weight.copy_(head.weight)
        classifier.bias.copy_(head.bias)
    return out.eval()
