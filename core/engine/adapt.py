"""Self-supervised adaptation: a backbone learns the user's domain from unlabeled images, into a run folder of
adapted weights that a training starts from (`train --weights <run>/adapted.safetensors`).

`adapt(cfg)` reads the unlabeled pool (cfg.unlabeled, plus the labeled set's training images without their labels;
never the validation images, which judge the fine-tuned model later), decodes it once, and trains the backbone with
cfg.adapt_objective (core/models/selfsup.py), from the weights setting ('imagenet') or from random weights. The
honest comparison is part of the result: the cross-validated linear-probe accuracy (core/analysis/linear.py) of
the backbone before and after, on the labeled images, is in the summary.

A loop of its own, not engine/loop.py's epoch_loop: that one selects the best epoch by validation accuracy, stops
early on validation loss and knows freeze modes and classifier heads; here there are no labels to validate on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.analysis.linear import cv_accuracy
from core.config import TrainConfig
from core.data.augment import Preprocessor
from core.data.dataset import Dataset, Sample, extract_dir_for, labeled_sample, open_dataset
from core.data.images import decode_images, geometry
from core.data.unlabeled import NO_LABEL, list_unlabeled
from core.device import autocast, backward_step, grad_scaler, halving_on_oom, pick_device, set_threads
from core.engine.callbacks import Callback
from core.engine.loop import check_finite, save_weights, state_copy
from core.engine.optim import SCHEDULES, param_groups, set_lr
from core.errors import ConfigError, DatasetError, TrainingError
from core.models import backbones
from core.models.features import pretrained_features
from core.models.selfsup import build_selfsup
from core.runs import RunDir, RunSummary, Status, create_run_dir

WEIGHTS_FILE = "adapted.safetensors"
INITIAL_FILE = "initial.safetensors"  # random start: the exact weights adaptation began from (the "before" probe)
PROBE_MAX_IMAGES = 600
PROBE_FOLDS = 5
GREY_P = 0.2  # SimSiam's random grayscale, on top of the standard crop, flip and colour jitter
REPORT_EVERY_S = 0.5


@dataclass(frozen=True)
class AdaptResult:
    status: Status
    run_dir: str
    weights: str  # the adapted backbone (.safetensors, timm names, no classifier)
    summary: RunSummary

    @property
    def adaptation(self) -> dict:
        return self.summary.adaptation or {}


def adapt(cfg: TrainConfig, callbacks: Sequence[Callback] = (), stop: threading.Event | None = None,
          run: RunDir | None = None) -> AdaptResult:
    """Adapt cfg.backbone with cfg.adapt_objective on the unlabeled pool; returns the run and its summary."""
    cfg.validate()
    if cfg.adapt_objective == "off":
        raise ConfigError("adapt_objective is 'off': choose simsiam or reconstruct to adapt the backbone.")
    stop = stop or threading.Event()
    emit = _emitter(callbacks)
    run = run or create_run_dir(cfg.output_dir)
    cfg.save(run.config)
    run.write_status(Status.RUNNING)
    try:
        return _adapt(cfg, run, emit, stop)
    except BaseException as exc:
        run.write_status(Status.FAILED, error=str(exc) or type(exc).__name__)
        raise


def _adapt(cfg: TrainConfig, run: RunDir, emit, stop: threading.Event) -> AdaptResult:
    t0 = time.perf_counter()
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    extract = extract_dir_for(cfg.output_dir)
    ds = open_dataset(cfg.data, cfg.val_fraction, cfg.seed, extract_dir=extract)
    pool = unlabeled_pool(cfg, ds)
    backbone = _start_backbone(cfg).to(device)
    data_cfg = backbones.data_config(backbone, cfg.img_size)
    before_weights = cfg.weights
    if cfg.adapt_from == "random":
        before_weights = str(run.path / INITIAL_FILE)
        save_weights(state_copy(backbone), Path(before_weights))
    emit("on_phase", "probe before adapting", 0, 0)
    before = probe_accuracy(cfg.replace(weights=before_weights), ds, emit, "probe before adapting", stop.is_set)

    geom = geometry(data_cfg)
    emit("on_phase", "decoding unlabeled images", 0, len(pool))
    images, failed = decode_images(pool, *geom, exact=False,
                                   progress=lambda d, t: emit("on_phase", "decoding unlabeled images", d, t))
    bad = {f.path for f in failed}
    rows = np.array([i for i, s in enumerate(pool) if s.path not in bad], dtype=np.int64)
    if len(rows) < 2:
        raise DatasetError(f"Only {len(rows)} of {len(pool)} unlabeled images could be decoded; adaptation needs "
                           f"at least 2 ({failed[0].reason if failed else ''}).")
    net, objective = build_selfsup(cfg.adapt_objective, backbone, int(data_cfg["input_size"][-1]))
    net.to(device)
    losses, status = _train(cfg, net, objective, images, rows, Preprocessor(data_cfg, device), emit, stop) \
        if before is not None else ([], Status.STOPPED)
    weights, after = run.path / WEIGHTS_FILE, None
    if losses:  # stopped before a batch finished: nothing changed, nothing to save
        save_weights(state_copy(backbone), weights)
    if status == Status.COMPLETED:
        after = probe_accuracy(cfg.replace(weights=str(weights)), ds, emit, "probe after adapting")
    info = {"objective": cfg.adapt_objective, "start": cfg.adapt_from, "epochs": cfg.adapt_epochs,
            "epochs_run": len(losses), "loss_per_epoch": losses, "pool_images": len(rows),
            "unlabeled_images": sum(1 for i in rows if pool[i].label == NO_LABEL), "probe_before": before,
            "probe_after": after, "probe_images": min(PROBE_MAX_IMAGES, len(ds.train) + len(ds.val)),
            "weights": WEIGHTS_FILE if losses else "", "seconds": round(time.perf_counter() - t0, 1)}
    summary = RunSummary(status, backbone=cfg.backbone, freeze="adapt", dataset=Path(ds.root).name,
                         classes=ds.classes, epochs_run=len(losses), train_seconds=info["seconds"],
                         num_train=len(rows), device=str(device), batch_size=cfg.batch_size,
                         skipped=[Path(f.path).name for f in failed], note=describe(info), adaptation=info)
    run.write_summary(summary)
    run.write_status(status)
    return AdaptResult(status, str(run.path), str(weights) if losses else "", summary)


def adapt_then_train_config(cfg: TrainConfig, callbacks: Sequence[Callback] = (), stop: threading.Event | None = None,
                            notes: Sequence[str] = ()) -> tuple[TrainConfig, list[str]]:
    """`train` with adapt_objective set: adapt first, then train from the adapted weights. Returns the training's
    config (the adapted weights file, adaptation off: replaying it does not adapt again) and its notes."""
    result = adapt(cfg, callbacks, stop)
    if result.status != Status.COMPLETED:
        raise TrainingError(f"Adaptation was stopped (run {Path(result.run_dir).name}); the training did not "
                            f"start.")
    note = f"Backbone adapted first (run {Path(result.run_dir).name}): {result.summary.note}"
    # the unlabeled images served the adaptation; the training keeps them only for distillation's teachers
    return cfg.replace(weights=result.weights, adapt_objective="off",
                       unlabeled=cfg.unlabeled if cfg.teachers else ""), [*notes, note]


def describe(info: dict) -> str:
    """One sentence for the run list and the CLI: what was adapted, and whether the probe says it helped."""
    if not info["weights"]:
        return "Adaptation was stopped before a single batch finished; no weights were saved."
    text = (f"Adapted weights ({info['objective']} from {info['start']}, {info['epochs_run']} of {info['epochs']} "
            f"epochs on {info['pool_images']} images).")
    b, a = info.get("probe_before"), info.get("probe_after")
    if a is not None and b is not None:
        verdict = "helped" if a > b + 0.005 else "did not help" if a < b - 0.005 else "made no clear difference"
        text += f" Linear-probe accuracy {b:.1%} before, {a:.1%} after: adaptation {verdict}."
    return text + f" Train from them with --weights <this run>/{info['weights']}."


def unlabeled_pool(cfg: TrainConfig, ds: Dataset) -> list[Sample]:
    """cfg.unlabeled's images, then the labeled set's training images (no labels); each file once."""
    extra = list_unlabeled(cfg.unlabeled, extract_dir_for(cfg.output_dir) / "unlabeled") if cfg.unlabeled else []
    seen = {s.path for s in extra}
    pool = extra + [Sample(s.path, 0) for s in ds.train if s.path not in seen]  # labels unused, NO_LABEL marks extras
    if not pool:
        raise DatasetError(f"No images to adapt on: {cfg.data} has no training images and no unlabeled folder "
                           f"was given.")
    return pool


def _start_backbone(cfg: TrainConfig) -> nn.Module:
    """cfg.backbone without a classifier, with the weights setting's weights or random ones."""
    start = cfg if cfg.adapt_from == "imagenet" else cfg.replace(weights="random")
    model = backbones.create_model(start, 1)  # bundled weights map by position onto a model with a head
    model.reset_classifier(0)
    return model


def probe_accuracy(cfg: TrainConfig, ds: Dataset, emit=None, phase: str = "probe",
                   should_stop: Callable[[], bool] = lambda: False) -> float | None:
    """Cross-validated linear-probe accuracy of cfg's backbone (cfg.weights) on up to PROBE_MAX_IMAGES labeled
    images, a stratified seeded sample of train + val (features from the per-machine cache when present); None
    when stopped."""
    samples = labeled_sample(ds, PROBE_MAX_IMAGES, PROBE_FOLDS, cfg.seed)  # the ranking's sample
    progress = (lambda d, t: emit("on_phase", phase, d, t)) if emit else None
    feats, _ = pretrained_features(cfg, samples, exact=False, progress=progress, should_stop=should_stop)
    if should_stop():
        return None
    rows = [(f[0], s.label) for f, s in zip(feats, samples, strict=True) if f is not None]
    if len(rows) < 2 * PROBE_FOLDS:
        raise DatasetError(f"Only {len(rows)} labeled images could be decoded; the probe needs at least "
                           f"{2 * PROBE_FOLDS}.")
    x, y = np.stack([r[0] for r in rows]), np.array([r[1] for r in rows])
    return cv_accuracy(x, y, len(ds.classes), PROBE_FOLDS, cfg.seed)


# -------------------------------------------------------------------------------------------------------
# the loop

def _train(cfg: TrainConfig, net: nn.Module, objective, images: np.ndarray, rows: np.ndarray, pre: Preprocessor,
           emit, stop: threading.Event) -> tuple[list[float], Status]:
    """cfg.adapt_epochs passes over the pool; returns the mean loss of each finished epoch and the status. On CUDA
    out-of-memory the batch is halved and the epoch runs again (and says so)."""
    opt = _optimizer(cfg, net)
    schedule = SCHEDULES["cosine"](cfg.replace(epochs=cfg.adapt_epochs))
    scaler = grad_scaler(pre.device, cfg.amp)
    g = torch.Generator().manual_seed(cfg.seed)
    bs = min(cfg.batch_size, len(rows))
    losses = []

    def halved(n: int) -> None:
        nonlocal bs
        if n < 2:  # BatchNorm and SimSiam need two images
            raise TrainingError("The GPU ran out of memory while adapting even with batch size 2. Choose a smaller "
                                "backbone or a smaller image size.") from None
        bs = n
        opt.zero_grad(set_to_none=True)
        emit("on_phase", f"GPU out of memory while adapting: batch size halved to {bs}.", 0, 0)
    for epoch in range(1, cfg.adapt_epochs + 1):
        loss = halving_on_oom(lambda n, e=epoch: _epoch(cfg, net, objective, images, rows, pre, emit, stop,
                                                       (opt, scaler, schedule, g), e, n), bs, halved)
        if loss is not None:
            losses.append(loss)
        if stop.is_set():
            return losses, Status.STOPPED
    return losses, Status.COMPLETED


def _epoch(cfg: TrainConfig, net: nn.Module, objective, images: np.ndarray, rows: np.ndarray, pre: Preprocessor,
           emit, stop: threading.Event, optim: tuple, epoch: int, bs: int) -> float | None:
    """One pass over the pool at batch size bs: its mean loss (None when stopped before a batch finished)."""
    opt, scaler, schedule, g = optim
    steps = max(1, len(rows) // bs)  # full batches only: BatchNorm needs more than one image, SimSiam a batch
    net.train()
    total, seen, last = 0.0, 0, 0.0
    for step, batch in enumerate(_batches(images, rows, bs, steps, pre, objective.views, g), start=1):
        set_lr(opt, schedule(((epoch - 1) + step / steps) / cfg.adapt_epochs))
        with autocast(pre.device, cfg.amp):
            out = objective(net, batch)
        backward_step(opt, scaler, out.loss)
        loss = out.loss.item()
        check_finite(loss, epoch, cfg, step)
        total, seen = total + loss * out.size, seen + out.size
        if time.perf_counter() - last >= REPORT_EVERY_S or step == steps:
            last = time.perf_counter()
            emit("on_phase", f"adapting ({cfg.adapt_objective}), epoch {epoch}/{cfg.adapt_epochs}, loss "
                             f"{total / seen:.4f}", (epoch - 1) * steps + step, cfg.adapt_epochs * steps)
        if stop.is_set():
            break
    return total / seen if seen else None


def _batches(images: np.ndarray, rows: np.ndarray, bs: int, steps: int, pre: Preprocessor, views: int,
             g: torch.Generator) -> Iterator:
    order = torch.randperm(len(rows), generator=g).numpy()
    for i in range(steps):
        idx = np.sort(rows[order[i * bs:(i + 1) * bs]])
        x_u8 = torch.from_numpy(images[idx])
        out = [_view(pre, x_u8, g, grey=views > 1) for _ in range(views)]
        yield tuple(out) if views > 1 else out[0]


def _view(pre: Preprocessor, x_u8: torch.Tensor, g: torch.Generator, grey: bool) -> torch.Tensor:
    """Random resized crop, flip and colour jitter (core/data/augment.py); SimSiam also turns some views grey."""
    x = pre.train_view(x_u8, "standard", g)
    if grey:
        pick = (torch.rand(len(x), generator=g) < GREY_P).to(x.device).view(-1, 1, 1, 1)
        x = torch.where(pick, x.mean(1, keepdim=True).expand_as(x), x)
    return x


def _optimizer(cfg: TrainConfig, net: nn.Module) -> torch.optim.Optimizer:
    """AdamW; the heads at cfg.lr, the backbone at cfg.lr * backbone_lr_mult when it starts pretrained (keep what
    ImageNet taught it) or at cfg.lr from random weights; no weight decay on biases and norm weights."""
    backbone = {id(p) for p in net.backbone.parameters()}
    mult = cfg.backbone_lr_mult if cfg.adapt_from == "imagenet" else 1.0
    return torch.optim.AdamW(param_groups([([p for p in net.parameters() if id(p) in backbone], cfg.lr * mult),
                                           ([p for p in net.parameters() if id(p) not in backbone], cfg.lr)],
                                          cfg.weight_decay), lr=cfg.lr)


def _emitter(callbacks: Sequence[Callback]):
    def emit(hook: str, *args) -> None:
        for cb in callbacks:
            getattr(cb, hook)(*args)
    return emit
