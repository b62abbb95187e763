"""The training engine: dataset -> pretrained backbone -> fine-tuned classifier(s) in a run folder.

`train(cfg)` is the one entry point used by the CLI, the job registry (web UI) and the tests. It knows
nothing about who watches: progress goes out through `Callback` hooks as plain floats, and a stop flag is
checked after every batch. A run with one task and a run with several (cfg.tasks) take the same track; where they
differ (network, labels, scores, the end of the run) this module asks a task set (core/engine/tasks.py). Two fit
paths share one epoch loop (core/engine/loop.py):
- probe: the frozen backbone runs once per image (core/models/features.py); the head(s) train on cached features;
- partial / full / gradual: images are decoded once into a uint8 store; augmentation runs on batches.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from core.analysis.linear import logistic_head
from core.config import TrainConfig
from core.data.augment import Preprocessor, batch_mixer
from core.data.fingerprints import Gathered
from core.data.images import decode_images, geometry, one_torch_thread
from core.device import pick_device, set_threads
from core.engine import batches as b
from core.engine import distributed
from core.engine.adapt import adapt_then_train_config
from core.engine.balance import epoch_order
from core.engine.callbacks import BatchMetrics, Callback, EpochMetrics, FitInfo, FitResult, RunRecorder
from core.engine.loop import EvalResult, Session, beats_start, best_epoch, epoch_loop, save_weights, state_copy
from core.engine.multitask import SeveralTasks
from core.engine.tasks import OneTask
from core.engine.teachers import soft_targets
from core.engine.tensorboard import experiment_logs
from core.errors import ConfigError, TrainingError
from core.models import backbones, init_from
from core.models.features import Backbone, extract_features, feature_cache, model_key, onnx_dir, weights_digest
from core.models.heads import Standardiser
from core.models.tta import mean_of_views
from core.runs import RunDir, RunSummary, Status, create_run_dir

__all__ = ["train", "TrainingError", "Callback", "FitInfo", "BatchMetrics", "EpochMetrics", "FitResult"]

MEMMAP_ABOVE_BYTES = 2 * 1024**3  # decoded images beyond this go to a memory-mapped file, not RAM
PREFIX_CACHE_MAX_BYTES = 1024**3  # cached frozen-prefix outputs (Lite0, 224 px: 63 KB per image)

Tasks = OneTask | SeveralTasks


# -------------------------------------------------------------------------------------------------------
# entry point

def train(cfg: TrainConfig, callbacks: Sequence[Callback] = (), stop: threading.Event | None = None,
          run: RunDir | None = None, resume: bool = False, notes: Sequence[str] = ()) -> FitResult:
    """Train per cfg into a new run folder (or `run`); returns the final status and summary.

    With resume=True, `run` is an earlier run of the same cfg: training goes on after its last finished
    epoch (from last.ckpt) and ends with the same number of epochs as an uninterrupted run. `notes` start the
    summary's notes (the advisor's reasons, when it chose the settings).
    """
    cfg.validate()
    cfg = init_from.resolve(cfg)  # started from a run: its backbone (and a bad path is a sentence here)
    tasks = SeveralTasks() if cfg.task_spec.several else OneTask()
    tasks.check(cfg)
    if tasks.adapts and cfg.adapt_objective != "off" and not resume:  # self-supervised adaptation first, into a
        cfg, notes = adapt_then_train_config(cfg, callbacks, stop, notes)  # run of its own
    dist = distributed.setup(pick_device(cfg.device))  # None unless started by torchrun with several processes
    scratch = None
    if dist is not None:
        if resume or cfg.freeze == "gradual":
            raise ConfigError("Multi-process training (torchrun) runs fresh runs of probe, partial or full; resume "
                              "and gradual unfreezing run in one process.")
        if not dist.is_main:  # only rank 0 writes the run folder; the others write to a throwaway one
            scratch = Path(tempfile.mkdtemp(prefix=f"transferlab-rank{dist.rank}-"))
            run, callbacks = create_run_dir(scratch), []
    run = run or create_run_dir(cfg.output_dir)
    if not resume:
        cfg.save(run.config)
    recorder = RunRecorder(run, sync_epochs=cfg.freeze != "probe")  # a probe's epochs take milliseconds
    s = Session(cfg, run, [recorder, *experiment_logs(cfg, run), *callbacks], stop or threading.Event(), resume=resume,
                notes=list(notes), dist=dist)
    try:
        _prepare(s, tasks)
        fit = _fit_probe if cfg.freeze == "probe" else _fit_finetune
        status = fit(s, tasks)
        result = tasks.finish(s, status) if dist is None or dist.is_main else \
            FitResult(Status(status), str(run.path), RunSummary(Status(status)))
    except BaseException as exc:
        s.emit("on_exception", exc)
        raise
    finally:
        distributed.teardown(dist)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    s.emit("on_fit_end", result)
    return result


def _prepare(s: Session, tasks: Tasks) -> None:
    cfg = s.cfg
    # several processes on one machine share its cores (torchrun starts LOCAL_WORLD_SIZE of them)
    set_threads(cfg.threads or (max(1, set_threads(0) // s.dist.local_world) if s.dist else 0))
    torch.manual_seed(cfg.seed)
    s.gen = torch.Generator().manual_seed(cfg.seed)
    s.batch_size = cfg.batch_size
    s.device = pick_device(cfg.device)
    s.eval_batch = b.eval_batch_size(s.device)
    tasks.prepare(s)  # dataset, network with its head(s), freezing, objective, notes
    s.model = s.model.to(memory_format=torch.channels_last)
    s.data_cfg = backbones.data_config(tasks.trunk(s.model), cfg.img_size)
    s.pre = Preprocessor(s.data_cfg, s.device)


# -------------------------------------------------------------------------------------------------------
# probe: features once, head(s) on the cache

def _fit_probe(s: Session, tasks: Tasks) -> str:
    cfg, ds = s.cfg, s.dataset
    key = model_key(cfg.backbone, cfg.weights, weights_digest(cfg), s.data_cfg)
    backbone = Backbone(tasks.trunk(s.model), s.data_cfg, s.device, onnx_dir(), key, cfg.amp)
    cache = feature_cache(key)  # per machine: shared with other runs, output folders, ranking and analysis
    geom = geometry(s.data_cfg)
    # one pass over train + val (+ test), so decoding never waits for a phase boundary
    n_train, n_val, samples = len(ds.train), len(ds.val), ds.train + ds.val + ds.test
    eval_views = 2 if cfg.tta == "flip" else 1  # test-time augmentation: the mirrored view of evaluation images too
    views = [cfg.probe_views] * n_train + [eval_views] * (len(samples) - n_train)
    exact = [False] * n_train + [True] * (len(samples) - n_train)  # evaluation decodes like the exported model
    s.emit("on_phase", "computing features", 0, len(samples))
    s.gathered = Gathered()
    feats, failed = extract_features(samples, views, exact, backbone, geom, cache,
                                     progress=lambda d, t: s.emit("on_phase", "computing features", d, t),
                                     should_stop=s.stop.is_set, on_read=s.gathered.add)
    ds.drop(failed)
    if s.stop.is_set():
        return "stopped"
    b.require_decoded(ds, n_train, n_val, failed)
    train_x = np.stack([f for f in feats[:n_train] if f is not None])
    pooled, mirrored = ({"val": b.stack_view(feats[n_train:n_train + n_val], view, s.device),
                         "test": b.stack_view(feats[n_train + n_val:], view, s.device)} for view in (0, eval_views - 1))
    pooled["train"] = b.stack_view(feats[:n_train], 0, s.device)  # the unknown-input score is fitted on it
    views = train_x.shape[1]
    train_x = torch.from_numpy(train_x.reshape(-1, train_x.shape[-1])).to(s.device)
    train_y = tasks.labels(ds.train, s.device).repeat_interleave(views, dim=0)
    soft = _soft_targets(s)
    if s.stop.is_set():
        return "stopped"
    soft = soft.repeat_interleave(views, 0).to(s.device) if soft is not None else None
    val_y = tasks.labels(ds.val, s.device)
    head = tasks.probe_net(s.model)
    # the head(s) train on standardised features and are folded back afterwards (core/models/heads.py)
    norm = Standardiser.fit(train_x)
    train_x, val_x = norm(train_x), norm(pooled["val"])
    for linear in tasks.linear_heads(head):
        norm.unfold_from(linear)  # a head kept from an earlier run (init_from) starts where it was; a zero head stays

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        order = epoch_order(train_y, s.balance, s.gen).to(s.device)  # a permutation, or balanced draws
        order = s.dist.shard(order) if s.dist else order  # every rank draws the same order, then takes its share
        for i in range(0, len(order), s.batch_size):
            idx = order[i:i + s.batch_size]
            yield (train_x[idx], train_y[idx]) + ((soft[idx],) if soft is not None else ())

    best = tasks.probe_best(s, head)  # several heads: each keeps its own best epoch; one head: the loop's best

    def evaluate() -> EvalResult:
        with torch.inference_mode():
            ev = tasks.score(s, head(val_x), val_y)
        if best:
            best.see(ev)
        return ev

    def final(split: str, flip: bool = False) -> tuple[torch.Tensor, ...]:  # after folding: raw features
        with torch.inference_mode():
            return tasks.with_pooled(s.model, head)((mirrored if flip else pooled)[split])
    s.one_view_outputs, s.final_outputs = final, with_tta(final) if cfg.tta == "flip" else final
    with one_torch_thread():  # steps of microseconds: a second thread only waits (20 epochs: 17 s CPU vs 0.4 s)
        status = epoch_loop(s, head, batches, len(train_y), evaluate)
    if best:
        best.restore()
    elif status == "completed" and soft is None and len(val_y):
        _logistic_candidate(s, head, norm, train_x, train_y, val_x, val_y, evaluate().acc)
    for linear in tasks.linear_heads(head):
        norm.fold_into(linear)  # the delivered head(s) read raw pooled features
    if s.run.best_weights.exists():
        save_weights(state_copy(s.model), s.run.best_weights)
    return status


def _logistic_candidate(s: Session, head: torch.nn.Linear, norm: Standardiser, train_x: torch.Tensor,
                        train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, trained: float) -> None:
    """The expert's probe as a second candidate: an L2 logistic regression (core/analysis/linear.logistic_head, on
    features scaled by their plain mean and deviation, its strength chosen on validation). It replaces the trained
    head (which reads features standardised by `norm`) only if it is more accurate on validation; the run's notes
    say which head was delivered, with both numbers."""
    raw, raw_val = (norm.mean + x.float() * norm.std for x in (train_x, val_x))
    mean, std = raw.mean(0), raw.std(0, unbiased=False) + 1e-6
    c, acc, w, bias = logistic_head(((raw - mean) / std).cpu().numpy(), train_y.cpu().numpy(),
                                    ((raw_val - mean) / std).cpu().numpy(), val_y.cpu().numpy(), head.out_features,
                                    balanced=s.balance.mode != "off")
    if acc <= trained:
        s.notes.append(f"Probe head: the trained head ({trained:.1%} on validation) was kept; a logistic regression "
                       f"on the same features reached {acc:.1%} (C={c:g}).")
        return
    w = torch.as_tensor(w, dtype=torch.float32, device=std.device) / std  # on raw features, then on norm's scale
    with torch.no_grad():
        head.weight.copy_(w.to(head.weight.dtype))
        head.bias.copy_((torch.as_tensor(bias, dtype=torch.float32, device=std.device) - w @ mean).to(head.bias.dtype))
    norm.unfold_from(head)
    s.notes.append(f"Probe head: a logistic regression on the same features (C={c:g} chosen on "
                   f"validation) reached {acc:.1%} on validation, more than the trained head's {trained:.1%}; it is "
                   f"the head delivered.")


def _soft_targets(s: Session) -> torch.Tensor | None:
    """Distillation: the teachers' probabilities at the distillation temperature for each training image (in
    ds.train's order, after undecodable images were dropped), from the per-machine cache where present; None
    without teachers or when stopped."""
    if not s.teachers:
        return None
    return soft_targets(s.teachers, s.dataset.train, s.cfg.distill_temperature, s.device,
                        progress=lambda phase, d, t: s.emit("on_phase", phase, d, t), should_stop=s.stop.is_set)


# -------------------------------------------------------------------------------------------------------
# partial / full / gradual: decode once, augment batches

def _fit_finetune(s: Session, tasks: Tasks) -> str:
    cfg, ds = s.cfg, s.dataset
    stores = _decode_splits(s)
    (train_u8, train_rows), (val_u8, val_rows) = stores["train"], stores["val"]
    train_y, val_y = tasks.labels(ds.train, torch.device("cpu")), tasks.labels(ds.val, s.device)
    soft = _soft_targets(s)
    if s.stop.is_set():
        return "stopped"

    # partial freezing: the frozen prefix's outputs never change, so they are computed once (validation
    # always; training images when augmentation is off) and the epochs run only the rest of the network
    net, prefix = s.model, None
    split_net = tasks.split_prefix(s.model) if cfg.freeze == "partial" else None
    if split_net is not None:
        prefix, net = split_net
        # eval before any pass: its BatchNorm statistics stay as they are. `net` holds the whole model, so
        # set_train_mode(net) flips the prefix back to train mode each epoch; batches() sets eval again.
        prefix.eval()
        val_src = b.prefix_outputs(s, prefix, val_u8, val_rows, "validation", PREFIX_CACHE_MAX_BYTES)
        train_src = b.prefix_outputs(s, prefix, train_u8, train_rows, "training", PREFIX_CACHE_MAX_BYTES) \
            if cfg.augmentation == "none" and cfg.mixup == "off" else None
    else:
        val_src = train_src = None

    mixer = batch_mixer(cfg.mixup, cfg.mixup_alpha, cfg.label_smoothing, len(ds.classes), cfg.seed)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        bs, g = s.batch_size, s.gen
        order = epoch_order(train_y, s.balance, g)  # a permutation, or balanced draws (balance: sampler)
        order = s.dist.shard(order) if s.dist else order  # every rank draws the same order, then takes its share
        n = len(order) - (len(order) % bs == 1)  # a batch of one breaks BatchNorm in train mode
        if prefix is not None:
            prefix.eval()
        for i in range(0, n, bs):
            idx = order[i:i + bs].sort().values  # sorted: sequential reads from a memory-mapped store
            extra = (soft[idx].to(s.device),) if soft is not None else ()  # distillation's soft targets
            if train_src is not None:
                yield (train_src[idx.to(train_src.device)], train_y[idx].to(s.device)) + extra
                continue
            x_u8 = torch.from_numpy(train_u8[train_rows[idx.numpy()]])
            if s.device.type == "cuda":
                x_u8 = x_u8.pin_memory()  # lets the copy to the GPU overlap with compute (non_blocking)
            x = s.pre.train_view(x_u8, cfg.augmentation, g)
            y = train_y[idx].to(s.device, non_blocking=True)
            if mixer is not None:
                x, y = mixer(x, y)
            if prefix is not None:
                with torch.no_grad():
                    x = prefix(x)
            yield (x, y) + extra

    def evaluate() -> EvalResult:
        logits = b.run_batched(s, net, val_src, outputs=tasks.net_outputs) if val_src is not None else \
            b.run_batched(s, s.model, images_u8=val_u8, rows=val_rows, outputs=tasks.net_outputs)
        return tasks.score(s, logits, val_y)

    def final(split: str, flip: bool = False) -> tuple[torch.Tensor, ...]:
        if split == "val" and val_src is not None and not flip:
            return b.run_batched(s, tasks.with_pooled(s.model, net), val_src, outputs=tasks.final_outputs)
        u8, rows = stores[split]
        return b.run_batched(s, tasks.with_pooled(s.model, s.model), images_u8=u8, rows=rows,
                             outputs=tasks.final_outputs, flip=flip)
    s.one_view_outputs, s.final_outputs = final, with_tta(final) if cfg.tta == "flip" else final
    s.start_is_candidate = isinstance(tasks, OneTask) and bool(cfg.init_from) and not s.resume and \
        init_from.same_classes(init_from.read_source(cfg.init_from, weights=False).classes, ds.classes)
    status = epoch_loop(s, net, batches, len(train_y), evaluate)
    if s.start_eval is not None:
        s.notes.append(_start_note(s))
    return status


def _start_note(s: Session) -> str:
    """Which of the starting point (a run of the same classes, e.g. auto's probe) and the fine-tuned epochs was
    delivered, with both validation accuracies."""
    start = s.start_eval.acc
    name = init_from.read_source(s.cfg.init_from, weights=False).name
    best = best_epoch(s.run.read_metrics())
    if best is None:
        return f"Delivered the starting point (run {name}, {start:.1%} on validation): no epoch finished."
    if beats_start(best, s.start_eval):
        return (f"Delivered the fine-tuned weights: epoch {best['epoch']} reached {best['val_acc']:.1%} on "
                f"validation, above the starting point's {start:.1%} (run {name}).")
    return (f"Delivered the starting point (run {name}): {start:.1%} on validation, and no fine-tuned epoch beat "
            f"it (the best reached {best['val_acc']:.1%}), so fine-tuning was not worth keeping here.")


def with_tta(final: Callable[[str, bool], tuple[torch.Tensor, ...]]) -> Callable[[str], tuple[torch.Tensor, ...]]:
    """Test-time augmentation of the run's final evaluation (summary, predictions.npz, calibration): the image's
    and its mirror image's probabilities averaged (as log-probabilities, core/models/tta.py); the image's pooled
    features. The per-epoch validation curve stays single-view."""
    def both(split: str) -> tuple[torch.Tensor, ...]:
        logits, pooled = final(split, False)
        return mean_of_views(logits, final(split, True)[0]), pooled
    return both


def _decode_splits(s: Session) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every split decoded once into a uint8 store: split -> (store, rows of the images that decoded). Training
    images only feed augmentation: the fast decode; evaluation decodes like the exported model. Images that fail
    are dropped from the dataset (and listed as skipped)."""
    ds, geom = s.dataset, geometry(s.data_cfg)
    n_train, n_val = len(ds.train), len(ds.val)
    total = n_train + n_val + len(ds.test)
    s.emit("on_phase", "decoding images", 0, total)
    stores, failed, done = {}, [], 0
    s.gathered = Gathered()
    for split, samples in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
        arr, bad = decode_images(samples, *geom, out=b.image_store(s, split, len(samples), geom[0], MEMMAP_ABOVE_BYTES),
                                 exact=split != "train",
                                 progress=lambda d, _, base=done: s.emit("on_phase", "decoding images", base + d,
                                                                         total), on_read=s.gathered.add)
        stores[split], done = (arr, b.good_rows(samples, bad)), done + len(samples)
        failed += bad
    ds.drop(failed)
    b.require_decoded(ds, n_train, n_val, failed)
    s.emit("on_phase", "decoding images", total, total)
    return stores
