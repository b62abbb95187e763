"""What a run with one task does differently from a run with several: the seam of core/engine/train.py.

train.py has one preparation, one probe path and one fine-tune path for every run. Where one task and several
differ, it asks a task set: `OneTask` (here: a timm classifier, its class folders, Classify or Distill) or
`SeveralTasks` (core/engine/multitask.py: a shared backbone with a head per task, an N x tasks label matrix, the
MultiTask objective, per-task scores and a task view per task). Both answer the same questions:

    check(cfg)              ConfigError for a setting this kind of run does not support
    adapts                  whether self-supervised adaptation (adapt_objective) runs before training
    prepare(s)              the dataset, the network, its freezing, the objective and notes, on the Session
    trunk(model)            the module whose pooled features a probe caches
    labels(samples, device) the training targets: N labels, or N x tasks
    probe_net(model)        what a probe trains on cached features: features -> logits
    linear_heads(net)       the linear layers of probe_net (standardised features are folded into them)
    probe_best(s, net)      None: the loop's best epoch; or a keeper of each head's own best epoch
    split_prefix(model)     (frozen prefix, the network after it) or None
    net_outputs             run_batched's `outputs` for the network: None (one tensor) or the number of tasks
    with_pooled(model, net) a module returning (*logits, pooled features), final_outputs of them
    score(s, logits, y)     the validation EvalResult that picks the best epoch
    finish(s, status)       the run folder's results: summary, predictions, bundle(s)
"""

from __future__ import annotations

import torch
from torch import nn

from core.data.dataset import Sample, extract_dir_for, open_dataset
from core.engine import teachers
from core.engine.balance import Balance, class_weights, decide
from core.engine.callbacks import FitResult
from core.engine.finish import finish_run
from core.engine.loop import EvalResult, Session, scores
from core.errors import ConfigError
from core.models import backbones, freeze, init_from
from core.models.objectives import Classify, Distill


class OneTask:
    """A single-task run: class folders, a timm classifier, Classify (or Distill with teachers)."""

    net_outputs = None
    final_outputs = 2  # logits, pooled features
    adapts = True  # adapt_objective: self-supervised adaptation runs first

    @staticmethod
    def check(cfg) -> None:
        if cfg.freeze == "auto":
            raise ConfigError("freeze 'auto' is decided from the data before training: resolve it with "
                              "core.workflows.auto.resolve_auto(cfg) (the CLI and the app do), or choose "
                              "probe, partial, full or gradual.")

    @staticmethod
    def prepare(s: Session) -> None:
        cfg = s.cfg
        s.dataset = open_dataset(cfg.data, cfg.val_fraction, cfg.seed, extract_dir=extract_dir_for(cfg.output_dir))
        s.model = backbones.create_model(cfg, len(s.dataset.classes), s.dataset.classes).to(s.device)
        if cfg.init_from:
            s.notes.append(init_from.start_note(cfg, s.dataset.classes))
        freeze.apply_freeze(s.model, cfg, epoch=0)
        s.notes += [n for n in [freeze.batchnorm_note(cfg)] if n]
        unlabeled = teachers.add_unlabeled(cfg, s.dataset)  # label -1: learned from the teachers only
        if cfg.teachers:  # distillation: a teacher that cannot be used fails here, before any decoding
            s.teachers = teachers.load_teachers(cfg, s.dataset.classes)
            s.objective = Distill(cfg.distill_alpha, cfg.distill_temperature, cfg.label_smoothing)
            s.notes.append(teachers.describe(cfg, unlabeled))
            s.balance = Balance("off", "distillation learns the teachers' probabilities (they carry their own balance)")
        else:
            s.balance = decide(cfg.balance, s.dataset.counts()["train"])
        if s.balance.mode == "weights":
            weight = class_weights(OneTask.labels(s.dataset.train, torch.device("cpu")).numpy(),
                                   len(s.dataset.classes))
            s.objective = Classify(cfg.label_smoothing, weight.to(s.device))
        s.notes.append(s.balance.note)

    @staticmethod
    def trunk(model: nn.Module) -> nn.Module:
        return model

    @staticmethod
    def labels(samples: list[Sample], device: torch.device) -> torch.Tensor:
        return torch.tensor([x.label for x in samples], dtype=torch.long, device=device)

    @staticmethod
    def probe_net(model: nn.Module) -> nn.Module:
        return model.get_classifier()

    @staticmethod
    def linear_heads(net: nn.Module) -> list[nn.Module]:
        return [net]

    @staticmethod
    def probe_best(s: Session, net: nn.Module) -> None:
        return None

    @staticmethod
    def split_prefix(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
        return freeze.split_frozen_prefix(model)

    @staticmethod
    def with_pooled(model: nn.Module, net: nn.Module) -> nn.Module:
        """(logits, pooled) of the model, or of `net` (the network after a cached prefix) on the prefix's output;
        on a probe's head, the head's logits and its input."""
        if net is model.get_classifier():
            return _HeadAndInput(net)
        return freeze.PooledAndLogits(model) if net is model else freeze.PooledAndLogits(net.model, net.features)

    @staticmethod
    def score(s: Session, logits: torch.Tensor, y: torch.Tensor) -> EvalResult:
        return scores(logits, y)

    @staticmethod
    def finish(s: Session, status: str) -> FitResult:
        teachers.remove_unlabeled(s.dataset)  # summary, record and duplicates are about the labeled images
        return finish_run(s, status)


class _HeadAndInput(nn.Module):
    """A probe's head on pooled features: (logits, the features), like PooledAndLogits on images."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(x), x
