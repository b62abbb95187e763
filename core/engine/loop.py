"""The epoch loop every freeze mode shares: optimizer and schedule, batch and epoch hooks, best weights,
early stopping, checkpoint and resume, halving the batch on CUDA out-of-memory.

`train.py` prepares a Session (dataset, model, device) and hands `epoch_loop` what trains (`net`), a batch
source and an evaluation; everything here works the same on cached features, cached prefix outputs or images.
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save as safetensors_bytes
from torch import nn

from core.config import TrainConfig
from core.data.augment import Preprocessor
from core.data.dataset import Dataset
from core.device import autocast
from core.engine.callbacks import BatchMetrics, Callback, EpochMetrics, FitInfo
from core.engine.optim import SCHEDULES, build_optimizer
from core.errors import TrainingError
from core.files.atomic import atomic_write_bytes
from core.models import freeze
from core.runs import RunDir

REPORT_EVERY_S = 0.5


@dataclass
class EvalResult:
    loss: float
    acc: float
    probs: np.ndarray


@dataclass
class Session:
    cfg: TrainConfig
    run: RunDir
    callbacks: Sequence[Callback]
    stop: threading.Event
    device: torch.device = None
    dataset: Dataset = None
    model: nn.Module = None
    data_cfg: dict = None
    pre: Preprocessor = None
    final_logits: Callable[[], torch.Tensor] = None  # the validation evaluation the summary reports
    resume: bool = False
    batch_size: int = 0
    gen: torch.Generator = None  # batch order and augmentation: part of the checkpoint
    notes: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)

    def emit(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    @property
    def cache_dir(self) -> Path:
        return Path(self.cfg.output_dir) / "_cache"


def fit_info(s: Session, steps_per_epoch: int) -> FitInfo:
    trainable, total = freeze.parameter_counts(s.model)
    ds = s.dataset
    return FitInfo(s.run.run_id, str(s.run.path), s.cfg.freeze, str(s.device), ds.classes, ds.counts(),
                   [{"path": k.path, "reason": k.reason} for k in ds.skipped], ds.warnings, trainable, total,
                   s.cfg.epochs, steps_per_epoch)


@dataclass
class LoopState:
    """What the epoch loop carries from one epoch to the next (and across a resume)."""

    epoch: int = 0
    best_acc: float = -1.0
    best_acc_loss: float = math.inf
    best_loss: float = math.inf
    since_improved: int = 0


def epoch_loop(s: Session, net: nn.Module, batches: Callable[[int], Iterator], n_train: int,
               evaluate: Callable[[], EvalResult]) -> str:
    cfg = s.cfg
    steps = max(1, math.ceil(n_train / s.batch_size))
    opt = build_optimizer(s.cfg, s.model, net)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, SCHEDULES[cfg.scheduler](cfg, steps * cfg.epochs))
    scaler = torch.amp.GradScaler(enabled=s.device.type == "cuda" and cfg.amp == "fp16")
    loop = _restore_checkpoint(s, opt, sched) if s.resume else LoopState()
    s.emit("on_fit_start", fit_info(s, steps))
    best_state, t_fit = None, time.perf_counter()
    write_each_best = cfg.freeze != "probe"  # long epochs: keep the best on disk as it happens; probe: at end
    trainable = freeze.parameter_counts(s.model)[0]
    for epoch in range(loop.epoch + 1, cfg.epochs + 1):
        if cfg.freeze == "gradual":
            freeze.apply_freeze(s.model, cfg, epoch=epoch - 1)
            trainable = freeze.parameter_counts(s.model)[0]
        t_ep = time.perf_counter()
        train_loss, train_acc, seen = _train_epoch_with_oom_retry(s, net, opt, sched, scaler, batches, epoch,
                                                                  n_train, t_fit)
        if seen == 0:  # stopped before a single batch of this epoch finished
            break
        ev = evaluate()
        check_finite(train_loss, epoch, cfg)
        secs = time.perf_counter() - t_ep
        elapsed = time.perf_counter() - t_fit
        done = epoch - loop.epoch if s.resume else epoch
        m = EpochMetrics(epoch, train_loss, train_acc, ev.loss, ev.acc, opt.param_groups[0]["lr"], seen / secs,
                         secs, elapsed, elapsed / max(done, 1) * (cfg.epochs - epoch), trainable)
        if (ev.acc, -ev.loss) > (loop.best_acc, -loop.best_acc_loss):  # best = accuracy, then lower loss
            loop.best_acc, loop.best_acc_loss = ev.acc, ev.loss
            best_state = state_copy(s.model if write_each_best else net)  # probe: only the head changes
            if write_each_best:
                save_weights(best_state, s.run.best_weights)
        if ev.loss < loop.best_loss - 1e-4:  # early stopping watches the validation loss
            loop.best_loss, loop.since_improved = ev.loss, 0
        else:
            loop.since_improved += 1
        loop.epoch = epoch
        if write_each_best:
            _save_checkpoint(s, opt, sched, loop)
        s.emit("on_epoch_end", m)
        if s.stop.is_set() or (cfg.early_stopping and loop.since_improved >= cfg.early_stopping):
            break
    if best_state is None and not s.run.best_weights.exists():  # stopped in epoch 1: keep what exists
        best_state = state_copy(s.model if write_each_best else net)
    if best_state is not None and (not write_each_best or not s.run.best_weights.exists()):
        (s.model if write_each_best else net).load_state_dict(best_state)
        save_weights(state_copy(s.model), s.run.best_weights)
    return "stopped" if s.stop.is_set() else "completed"


def _train_epoch_with_oom_retry(s: Session, net, opt, sched, scaler, batches, epoch: int, n_train: int,
                                t_fit: float) -> tuple[float, float, int]:
    """On CUDA out-of-memory, halve the batch size and run the epoch again (and say so)."""
    while True:
        steps = max(1, math.ceil(n_train / s.batch_size))
        try:
            return _train_one_epoch(s, net, opt, sched, scaler, batches(epoch), epoch, steps, t_fit)
        except torch.cuda.OutOfMemoryError:
            if s.batch_size <= 1:
                raise TrainingError("The GPU ran out of memory even with batch size 1. Choose a smaller "
                                    "backbone or a smaller image size.") from None
            opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            s.batch_size //= 2
            s.notes.append(f"GPU out of memory in epoch {epoch}: batch size halved to {s.batch_size}.")
            s.emit("on_phase", s.notes[-1], 0, 0)


def _save_checkpoint(s: Session, opt, sched, loop: LoopState) -> None:
    """Everything needed to resume after the last finished epoch (read back with weights_only=True)."""
    buf = io.BytesIO()
    torch.save({"model": s.model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "loop": asdict(loop), "rng": torch.get_rng_state(), "batch_rng": s.gen.get_state(),
                "batch_size": s.batch_size}, buf)
    atomic_write_bytes(s.run.last_checkpoint, buf.getvalue())


def _restore_checkpoint(s: Session, opt, sched) -> LoopState:
    if not s.run.last_checkpoint.exists():  # nothing finished (or a probe run): start over in the same run
        s.run.keep_metrics(0)
        return LoopState()
    ck = torch.load(s.run.last_checkpoint, map_location=s.device, weights_only=True)
    s.model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    torch.set_rng_state(ck["rng"].cpu())
    s.gen.set_state(ck["batch_rng"].cpu())
    s.batch_size = ck["batch_size"]
    loop = LoopState(**ck["loop"])
    s.run.keep_metrics(loop.epoch)
    return loop


def _train_one_epoch(s: Session, net: nn.Module, opt, sched, scaler, batch_iter: Iterator, epoch: int,
                     steps: int, t_fit: float) -> tuple[float, float, int]:
    cfg = s.cfg
    freeze.set_train_mode(net)  # frozen BatchNorm layers stay in eval mode
    loss_sum = torch.zeros((), device=s.device)
    correct = torch.zeros((), device=s.device, dtype=torch.long)
    seen, t_ep, last_report = 0, time.perf_counter(), 0.0
    for step, (x, y) in enumerate(batch_iter, start=1):
        with autocast(s.device, cfg.amp):
            logits = net(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        now = time.perf_counter()
        if now - last_report >= REPORT_EVERY_S or step == steps:
            last_report = now
            loss_val = loss.item()  # the only sync point in the loop
            check_finite(loss_val, epoch, cfg, step)
            done = (epoch - 1) * steps + step
            elapsed = now - t_fit
            s.emit("on_batch_end", BatchMetrics(epoch, step, steps, loss_val, opt.param_groups[0]["lr"],
                                                seen / (now - t_ep), elapsed,
                                                elapsed / done * (cfg.epochs * steps - done)))
        if s.stop.is_set():
            break
    return (loss_sum / max(seen, 1)).item(), (correct.float() / max(seen, 1)).item(), seen


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    atomic_write_bytes(path, safetensors_bytes(state))


def scores(logits: torch.Tensor, y: torch.Tensor) -> EvalResult:
    if len(y) == 0:
        return EvalResult(float("nan"), float("nan"), np.zeros((0, logits.shape[1])))
    loss = F.cross_entropy(logits.float(), y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return EvalResult(loss, acc, F.softmax(logits.float(), 1).cpu().numpy())


def check_finite(loss: float, epoch: int, cfg: TrainConfig, step: int | None = None) -> None:
    if not math.isfinite(loss):
        where = f"epoch {epoch}" + (f", step {step}" if step else "")
        raise TrainingError(f"The training loss became {loss} at {where}: training diverged. Lower the "
                            f"learning rate (now {cfg.lr:g}, try {cfg.lr / 10:g}) and start again.")
