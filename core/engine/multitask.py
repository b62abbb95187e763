"""Multi-task training: one image folder with several labelings (core/data/multitask.py), one shared backbone with
a head per task (core/models/multitask.py), the loss a weighted sum of the task losses (objectives.MultiTask).

`SeveralTasks` is the task set core/engine/train.py trains with when the config has `tasks` (core/engine/tasks.py
lists what a task set answers): the run goes through the same preparation, decoding, feature cache (probe), cached
frozen prefix (partial) and epoch loop as a single-task run. Every batch carries every task's labels (-1 where an
image has none), so every task trains in every epoch. The loop's accuracy is the joint one (images whose every
labeled task is right: it picks the best epoch); each task's accuracy is recorded per epoch beside it. In a probe
the heads are independent (the backbone is frozen), so each head keeps its own best epoch instead.

The run folder holds what a single-task run's does (config, metrics, summary.json with per-task metrics under
`tasks`), plus one task view per task (tasks/<task>/, core/engine/task_views.py: a single-task run folder of that
task, its timm bundle in tasks/<task>/bundle/, loadable alone with timm's local-dir), one multi-output TorchScript
file (multitask.torchscript.pt) and multitask.json (each task's validation labels and predictions).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from core.analysis.metrics import classification_report
from core.analysis.predictions import SplitOutputs
from core.data.multitask import open_multitask
from core.data.task_samples import MISSING, MultiTaskDataset
from core.data.task_view import task_dataset
from core.engine.callbacks import FitResult
from core.engine.finish import build_summary, finish_run, portable_dataset_summary
from core.engine.loop import EvalResult, Session, state_copy
from core.engine.task_views import write_task_views
from core.errors import ConfigError
from core.export.multitask import FILE as MULTI_OUTPUT_FILE
from core.export.multitask import export_multitask_torchscript
from core.files.atomic import atomic_write_json
from core.files.paths import relative_path
from core.models import freeze
from core.models.multitask import MultiHead, WithPooled, apply_freeze, create_multitask_model
from core.models.objectives import MultiTask
from core.runs import SplitReport, Status

MODES = ("probe", "partial", "full")
RESULTS = "multitask.json"


class SeveralTasks:
    """A multi-task run: a MultiHead network (shared trunk, a head per task), N x tasks labels, MultiTask."""

    final_outputs = 0  # every task's logits, then the pooled features: set by prepare
    net_outputs = 0  # every task's logits: set by prepare
    adapts = False  # adapt_objective is not applied to multi-task runs

    @staticmethod
    def check(cfg) -> None:
        if cfg.freeze not in MODES:
            raise ConfigError(f"Multi-task training runs freeze {', '.join(MODES)}, not '{cfg.freeze}'"
                              + (" (resolve 'auto' first: the CLI and the app do)." if cfg.freeze == "auto" else "."))
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("Multi-task training runs in one process; start it without torchrun.")

    def prepare(self, s: Session) -> None:
        cfg = s.cfg
        s.dataset = ds = open_multitask(cfg)
        s.model = create_multitask_model(cfg, [len(t.classes) for t in ds.tasks]).to(s.device)
        apply_freeze(s.model, cfg)
        s.notes += [n for n in [freeze.batchnorm_note(cfg)] if n]
        weights = cfg.task_spec.weights_for([t.name for t in ds.tasks])
        s.objective = MultiTask(tuple(weights), cfg.label_smoothing)
        if len(set(weights)) > 1:
            s.notes.append("Task loss weights: " + ", ".join(f"{t.name} {w:.3g}" for t, w in zip(ds.tasks, weights,
                                                                                              strict=True)) + ".")
        self.net_outputs, self.final_outputs = len(ds.tasks), len(ds.tasks) + 1

    @staticmethod
    def trunk(model: MultiHead) -> nn.Module:
        return model.trunk

    @staticmethod
    def labels(samples, device: torch.device) -> torch.Tensor:
        """N x tasks labels, MISSING (-1) where an image has none for a task."""
        return torch.tensor([x.labels for x in samples], dtype=torch.long, device=device).reshape(len(samples), -1)

    @staticmethod
    def probe_net(model: MultiHead) -> MultiHead:
        return model.with_trunk(nn.Identity())

    @staticmethod
    def linear_heads(net: MultiHead) -> list[nn.Module]:
        return list(net.heads)  # one standardisation serves every head: they read the same features

    @staticmethod
    def probe_best(s: Session, net: MultiHead) -> BestHeads:
        return BestHeads(s, net)

    @staticmethod
    def split_prefix(model: MultiHead) -> tuple[nn.Module, MultiHead] | None:
        split = freeze.split_frozen_prefix(model.trunk)
        return None if split is None else (split[0], model.with_trunk(split[1]))

    @staticmethod
    def with_pooled(model: MultiHead, net: MultiHead) -> nn.Module:
        return WithPooled(net)

    @staticmethod
    def score(s: Session, logits: Sequence[torch.Tensor], y: torch.Tensor) -> EvalResult:
        return task_scores(s, logits, y)

    @staticmethod
    def finish(s: Session, status: str) -> FitResult:
        return finish_multitask(s, status)


class BestHeads:
    """A probe's heads are independent on frozen features: each keeps its own best epoch, as its own probe would."""

    def __init__(self, s: Session, net: MultiHead):
        self.s, self.net = s, net
        self.best: dict[int, tuple[tuple[float, float], int, dict]] = {}

    def see(self, ev: EvalResult) -> None:
        epoch = len(self.s.run.read_metrics()) + 1
        for t, m in enumerate(ev.tasks.values()):
            if t not in self.best or (m["val_acc"], -m["val_loss"]) > self.best[t][0]:
                self.best[t] = ((m["val_acc"], -m["val_loss"]), epoch, state_copy(self.net.heads[t]))

    def restore(self) -> None:
        """Every head back to its best epoch's weights, and a note saying which epochs those were."""
        for t, (_, _, state) in self.best.items():
            self.net.heads[t].load_state_dict(state)
        if self.best:
            self.s.notes.append("Probe: each task's head is the one from its own best epoch (" + ", ".join(
                f"{self.s.dataset.tasks[t].name} {epoch}" for t, (_, epoch, _) in sorted(self.best.items())) + ").")


def task_scores(s: Session, logits: Sequence[torch.Tensor], y: torch.Tensor) -> EvalResult:
    """Validation loss (weighted like training), joint accuracy, and each task's loss and accuracy over its labeled
    images; each task's training accuracy comes from the objective's tally of the epoch."""
    weights, tally = s.objective.weights, s.objective.tally
    loss, all_right, tasks = 0.0, torch.ones(len(y), dtype=torch.bool, device=y.device), {}
    for t, task in enumerate(s.dataset.tasks):
        labeled = y[:, t] != MISSING
        right = logits[t].argmax(1) == y[:, t]
        all_right &= right | ~labeled
        n = int(labeled.sum())
        task_loss = F.cross_entropy(logits[t][labeled].float(), y[labeled, t]).item() if n else float("nan")
        loss += weights[t] * task_loss if n else 0.0
        train_acc = (tally[t, 0] / tally[t, 1].clamp(min=1)).item() if tally is not None else float("nan")
        tasks[task.name] = {"val_loss": task_loss, "val_acc": (right & labeled).sum().item() / n if n else float("nan"),
                            "train_acc": train_acc}
    acc = all_right.float().mean().item() if len(y) else float("nan")
    return EvalResult(loss if len(y) else float("nan"), acc, np.zeros((0, 0)), tasks)


# -------------------------------------------------------------------------------------------------------
# the end of the run: per-task metrics, one bundle per task, one multi-output file

def finish_multitask(s: Session, status: str) -> FitResult:
    if not s.run.best_weights.exists():  # stopped before any training: the single-task ending says so
        return finish_run(s, status)
    s.model.load_state_dict(load_file(str(s.run.best_weights)))
    ds: MultiTaskDataset = s.dataset
    outputs = {split: s.final_outputs(split) for split in ("val", "test") if getattr(ds, split)}
    per_task = {t.name: _task_outputs(ds, t_i, outputs) for t_i, t in enumerate(ds.tasks)}
    first = per_task[ds.tasks[0].name]
    summary = build_summary(s, first, status)  # classes, val and test of the first task; best epoch, times, notes
    reports = {name: {split: SplitReport.from_dict({**classification_report(o.labels, o.predicted, task.classes),
                                                    "num": len(o.labels)}) for split, o in per_task[name].items()}
               for name, task in zip(per_task, ds.tasks, strict=True)}
    summary = dataclasses.replace(summary, tasks={
        task.name: {"classes": list(task.classes), "weight": w,
                    **{split: dataclasses.asdict(r) for split, r in reports[task.name].items()}}
        for task, w in zip(ds.tasks, s.objective.weights, strict=True)})
    atomic_write_json(s.run.dataset_file, portable_dataset_summary(ds.summary()))
    atomic_write_json(s.run.path / RESULTS, _results(ds, per_task))
    s.emit("on_phase", "exporting a bundle per task", 0, len(ds.tasks))
    temperatures = write_task_views(s, ds, per_task, reports, summary, status)  # tasks/<task>/: a run per task
    export_multitask_torchscript(s.model, {t.name: list(t.classes) for t in ds.tasks}, s.data_cfg,
                                 s.run.path / MULTI_OUTPUT_FILE, temperatures)
    for store in s.run.path.glob("decoded-*.npy"):
        store.unlink()
    summary = dataclasses.replace(summary, train_seconds=time.perf_counter() - s.t0)
    s.run.write_summary(summary)
    return FitResult(Status(status), str(s.run.path), summary)


def _task_outputs(ds: MultiTaskDataset, t: int, outputs: dict[str, tuple[torch.Tensor, ...]],
                  ) -> dict[str, SplitOutputs]:
    """Task t's outputs on each split, over the images labeled for it; paths relative to the task's own root
    (task_dataset: the image folder, or the task's dataset when tasks are datasets)."""
    out, data = {}, task_dataset(ds, t)
    for split, got in outputs.items():
        samples = getattr(ds, split)
        keep = [i for i, x in enumerate(samples) if x.labels[t] != MISSING]
        if not keep:
            continue
        probs = F.softmax(got[t].float(), dim=1).cpu().numpy()[keep].astype(np.float32)
        out[split] = SplitOutputs(probs, got[-1].float().cpu().numpy()[keep],
                                  np.array([samples[i].labels[t] for i in keep], dtype=np.int64),
                                  [relative_path(x.path, data.root) for x in getattr(data, split)])
    return out


def _results(ds: MultiTaskDataset, per_task: dict[str, dict[str, SplitOutputs]]) -> dict:
    """multitask.json: per task and split, the labeled images (relative paths), their labels and predictions."""
    return {"tasks": {t.name: list(t.classes) for t in ds.tasks},
            "splits": {name: {split: {"paths": o.paths, "labels": o.labels.tolist(),
                                      "predicted": o.predicted.tolist(), "accuracy": o.accuracy}
                              for split, o in splits.items()} for name, splits in per_task.items()}}

