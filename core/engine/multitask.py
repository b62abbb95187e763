"""Multi-task training: one image folder with several labelings (core/data/multitask.py), one shared backbone with
a head per task (core/models/multitask.py), the loss a weighted sum of the task losses (objectives.MultiTask).

`train()` hands a config whose `tasks` is set to `train_multitask`. It reuses the single-task pieces: decoding,
preprocessing, the machine's feature cache (probe), the cached frozen prefix (partial), and the epoch loop
(progress, stop, best weights, early stopping, checkpoint and resume). Every batch carries every task's labels
(-1 where an image has none), so every task trains in every epoch. The loop's accuracy is the joint one (images
whose every labeled task is right: it picks the best epoch); each task's accuracy is recorded per epoch beside it.
In a probe the heads are independent (the backbone is frozen), so each head keeps its own best epoch instead.

The run folder holds what a single-task run's does (config, metrics, summary.json with per-task metrics under
`tasks`), plus one task view per task (tasks/<task>/, core/engine/task_views.py: a single-task run folder of that
task, its timm bundle in tasks/<task>/bundle/, loadable alone with timm's local-dir), one multi-output TorchScript
file (multitask.torchscript.pt) and multitask.json (each task's validation labels and predictions).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from core.analysis.metrics import classification_report
from core.analysis.predictions import SplitOutputs, relative_path
from core.config import TrainConfig
from core.data.augment import Preprocessor
from core.data.images import decode_images, geometry
from core.data.multitask import MISSING, MultiTaskDataset, open_multitask, task_weights
from core.data.task_view import task_dataset
from core.device import pick_device, set_threads
from core.engine import train as single
from core.engine.batches import (
    eval_batch_size,
    good_rows,
    image_store,
    prefix_outputs,
    require_decoded,
    run_batched,
    stack_first_view,
)
from core.engine.callbacks import Callback, FitResult, RunRecorder
from core.engine.finish import build_summary, finish_run, portable_dataset_summary
from core.engine.loop import EvalResult, Session, epoch_loop, save_weights, state_copy
from core.engine.task_views import write_task_views
from core.engine.tensorboard import experiment_logs
from core.errors import ConfigError
from core.export.multitask import FILE as MULTI_OUTPUT_FILE
from core.export.multitask import export_multitask_torchscript
from core.files.atomic import atomic_write_json
from core.models import backbones, freeze
from core.models.features import Backbone, extract_features, feature_cache, model_key, onnx_dir, weights_digest
from core.models.heads import Standardiser
from core.models.multitask import WithPooled, apply_freeze, create_multitask_model
from core.models.objectives import MultiTask
from core.runs import RunDir, SplitReport, Status, create_run_dir

MODES = ("probe", "partial", "full")
RESULTS = "multitask.json"


def train_multitask(cfg: TrainConfig, callbacks: Sequence[Callback] = (), stop: threading.Event | None = None,
                    run: RunDir | None = None, resume: bool = False, notes: Sequence[str] = ()) -> FitResult:
    """train() for a config with `tasks`: the same contract (run folder, hooks, stop, resume)."""
    if cfg.freeze not in MODES:
        raise ConfigError(f"Multi-task training runs freeze {', '.join(MODES)}, not '{cfg.freeze}'"
                          + (" (resolve 'auto' first: the CLI and the app do)." if cfg.freeze == "auto" else "."))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("Multi-task training runs in one process; start it without torchrun.")
    run = run or create_run_dir(cfg.output_dir)
    if not resume:
        cfg.save(run.config)
    s = Session(cfg, run, [RunRecorder(run), *experiment_logs(cfg, run), *callbacks], stop or threading.Event(),
                resume=resume, notes=list(notes))
    try:
        _prepare(s)
        status = _fit_probe(s) if cfg.freeze == "probe" else _fit_finetune(s)
        result = finish_multitask(s, status)
    except BaseException as exc:
        s.emit("on_exception", exc)
        raise
    s.emit("on_fit_end", result)
    return result


def _prepare(s: Session) -> None:
    cfg = s.cfg
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    s.gen = torch.Generator().manual_seed(cfg.seed)
    s.batch_size = cfg.batch_size
    s.device = pick_device(cfg.device)
    s.eval_batch = eval_batch_size(s.device)
    s.dataset = ds = open_multitask(cfg)
    s.model = create_multitask_model(cfg, [len(t.classes) for t in ds.tasks]).to(s.device)
    s.model = s.model.to(memory_format=torch.channels_last)
    s.data_cfg = backbones.data_config(s.model.trunk, cfg.img_size)
    s.pre = Preprocessor(s.data_cfg, s.device)
    apply_freeze(s.model, cfg)
    weights = task_weights(cfg, [t.name for t in ds.tasks])
    s.objective = MultiTask(tuple(weights), cfg.label_smoothing)
    if len(set(weights)) > 1:
        s.notes.append("Task loss weights: " + ", ".join(f"{t.name} {w:.3g}" for t, w in zip(ds.tasks, weights,
                                                                                          strict=True)) + ".")


# -------------------------------------------------------------------------------------------------------
# probe: features once (shared with single-task runs of the same backbone), heads on the cache

def _fit_probe(s: Session) -> str:
    cfg, ds = s.cfg, s.dataset
    key = model_key(cfg.backbone, cfg.weights, weights_digest(cfg), s.data_cfg)
    backbone = Backbone(s.model.trunk, s.data_cfg, s.device, onnx_dir(), key, cfg.amp)
    n_train, n_val, samples = len(ds.train), len(ds.val), ds.train + ds.val + ds.test
    views = [cfg.probe_views] * n_train + [1] * (len(samples) - n_train)
    exact = [False] * n_train + [True] * (len(samples) - n_train)
    s.emit("on_phase", "computing features", 0, len(samples))
    feats, failed = extract_features(samples, views, exact, backbone, geometry(s.data_cfg), feature_cache(key),
                                     progress=lambda d, t: s.emit("on_phase", "computing features", d, t),
                                     should_stop=s.stop.is_set)
    ds.drop(failed)
    if s.stop.is_set():
        return "stopped"
    require_decoded(ds, n_train, n_val, failed)
    train_x = np.stack([f for f in feats[:n_train] if f is not None])
    pooled = {"val": stack_first_view(feats[n_train:n_train + n_val], s.device),
              "test": stack_first_view(feats[n_train + n_val:], s.device)}
    n_views = train_x.shape[1]
    train_x = torch.from_numpy(train_x.reshape(-1, train_x.shape[-1])).to(s.device)
    train_y = label_matrix(ds.train, s.device).repeat_interleave(n_views, dim=0)
    val_y = label_matrix(ds.val, s.device)
    heads = s.model.with_trunk(nn.Identity())
    # as for one task, the heads train on standardised features and are folded back afterwards
    # (core/models/heads.py): one standardisation serves every head, since they read the same features
    norm = Standardiser.fit(train_x)
    train_x, val_x = norm(train_x), norm(pooled["val"])
    for head in heads.heads:
        norm.unfold_from(head)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        s.objective.reset()
        order = torch.randperm(len(train_y), generator=s.gen).to(s.device)
        for i in range(0, len(order), s.batch_size):
            idx = order[i:i + s.batch_size]
            yield train_x[idx], train_y[idx]

    def final(split: str) -> tuple[torch.Tensor, ...]:  # after folding: raw features, like the bundles
        with torch.inference_mode():
            return WithPooled(heads)(pooled[split])

    # the heads are independent on frozen features: each keeps its own best epoch, as its own probe would
    best: dict[int, tuple[tuple[float, float], int, dict]] = {}

    def evaluate() -> EvalResult:
        with torch.inference_mode():
            ev = task_scores(s, heads(val_x), val_y)
        epoch = len(s.run.read_metrics()) + 1
        for t, m in enumerate(ev.tasks.values()):
            if t not in best or (m["val_acc"], -m["val_loss"]) > best[t][0]:
                best[t] = ((m["val_acc"], -m["val_loss"]), epoch, state_copy(heads.heads[t]))
        return ev
    s.final_outputs = final
    status = epoch_loop(s, heads, batches, len(train_y), evaluate)
    for t, (_, _, state) in best.items():
        heads.heads[t].load_state_dict(state)
    for head in heads.heads:
        norm.fold_into(head)  # the delivered heads read raw pooled features
    if best:
        save_weights(state_copy(s.model), s.run.best_weights)
        s.notes.append("Probe: each task's head is the one from its own best epoch (" + ", ".join(
            f"{ds.tasks[t].name} {epoch}" for t, (_, epoch, _) in sorted(best.items())) + ").")
    return status


# -------------------------------------------------------------------------------------------------------
# partial / full: decode once, augment batches

def _fit_finetune(s: Session) -> str:
    cfg, ds = s.cfg, s.dataset
    geom, outputs = geometry(s.data_cfg), len(ds.tasks) + 1  # every task's logits, then the pooled features
    n_train, n_val = len(ds.train), len(ds.val)
    total = n_train + n_val + len(ds.test)
    s.emit("on_phase", "decoding images", 0, total)
    stores, failed, done = {}, [], 0
    for split, samples in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
        arr, bad = decode_images(samples, *geom, out=image_store(s, split, len(samples), geom[0],
                                                                single.MEMMAP_ABOVE_BYTES),
                                 exact=split != "train",
                                 progress=lambda d, _, base=done: s.emit("on_phase", "decoding images", base + d,
                                                                         total))
        stores[split], done = (arr, good_rows(samples, bad)), done + len(samples)
        failed += bad
    ds.drop(failed)
    require_decoded(ds, n_train, n_val, failed)
    (train_u8, train_rows), (val_u8, val_rows) = stores["train"], stores["val"]
    train_y, val_y = label_matrix(ds.train, torch.device("cpu")), label_matrix(ds.val, s.device)

    net, prefix, val_src, train_src = s.model, None, None, None
    split_net = freeze.split_frozen_prefix(s.model.trunk) if cfg.freeze == "partial" else None
    if split_net is not None:  # as in single-task training: the frozen prefix's outputs are computed once
        prefix, rest = split_net
        net = s.model.with_trunk(rest)
        prefix.eval()
        val_src = prefix_outputs(s, prefix, val_u8, val_rows, "validation", single.PREFIX_CACHE_MAX_BYTES)
        train_src = prefix_outputs(s, prefix, train_u8, train_rows, "training",
                                       single.PREFIX_CACHE_MAX_BYTES) \
            if cfg.augmentation == "none" else None

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        s.objective.reset()
        bs, g = s.batch_size, s.gen
        order = torch.randperm(len(train_y), generator=g)
        n = len(order) - (len(order) % bs == 1)  # a batch of one breaks BatchNorm in train mode
        if prefix is not None:
            prefix.eval()
        for i in range(0, n, bs):
            idx = order[i:i + bs].sort().values
            if train_src is not None:
                yield train_src[idx.to(train_src.device)], train_y[idx].to(s.device)
                continue
            x = s.pre.train_view(torch.from_numpy(train_u8[train_rows[idx.numpy()]]), cfg.augmentation, g)
            if prefix is not None:
                with torch.no_grad():
                    x = prefix(x)
            yield x, train_y[idx].to(s.device)

    def final(split: str) -> tuple[torch.Tensor, ...]:
        if split == "val" and val_src is not None:
            return run_batched(s, WithPooled(net), val_src, outputs=outputs)
        u8, rows = stores[split]
        return run_batched(s, WithPooled(s.model), images_u8=u8, rows=rows, outputs=outputs)

    def evaluate() -> EvalResult:
        return task_scores(s, final("val")[:-1], val_y)
    s.final_outputs = final
    return epoch_loop(s, net, batches, len(train_y), evaluate)


def label_matrix(samples, device: torch.device) -> torch.Tensor:
    """N x tasks labels, MISSING (-1) where an image has none for a task."""
    return torch.tensor([x.labels for x in samples], dtype=torch.long, device=device).reshape(len(samples), -1)


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

