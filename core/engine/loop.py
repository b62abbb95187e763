"""The epoch loop every freeze mode and objective shares: optimizer and schedule, batch and epoch hooks, best
weights, early stopping, checkpoint and resume, halving the batch on CUDA out-of-memory.

`train.py` prepares a Session (dataset, model, device, objective) and hands `epoch_loop` what trains (`net`), a
batch source and an evaluation; everything here works the same on cached features, cached prefix outputs or
images, and for any objective (core/models/objectives.py): the loop only backpropagates the loss it returns.
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
from core.data.fingerprints import Gathered
from core.device import autocast, backward_step, free_cached_memory, grad_scaler, is_out_of_memory
from core.engine.balance import Balance
from core.engine.callbacks import BatchMetrics, Callback, EpochMetrics, FitInfo
from core.engine.distributed import Dist
from core.engine.optim import SCHEDULES, build_optimizer, set_lr
from core.errors import TrainingError
from core.files.atomic import atomic_write_bytes
from core.models import freeze
from core.models.objectives import Classify, Objective
from core.runs import RunDir

REPORT_EVERY_S = 0.5


@dataclass
class EvalResult:
    loss: float
    acc: float
    probs: np.ndarray
    tasks: dict | None = None  # multi-task runs: task -> {"val_loss", "val_acc", "train_acc"} (recorded per epoch)


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
    # split ("val" / "test") -> (*logits, pooled features) of the current weights: what the summary reports (one task:
    # logits and pooled; several: each task's logits, then pooled), test-time flip averaged in when cfg.tta says so
    final_outputs: Callable[[str], tuple[torch.Tensor, ...]] = None
    # the same from the image as it is, one view ("train" too: the unknown-input score is fitted on its features)
    one_view_outputs: Callable[[str], tuple[torch.Tensor, ...]] = None
    objective: Objective = None  # forward + loss for one batch; classification unless a task says otherwise
    balance: Balance = Balance("off", "")  # class-balanced training (core/engine/balance.py): loss weights or sampler
    teachers: list = field(default_factory=list)  # distillation: core.engine.teachers.Teacher, when cfg has some
    dist: Dist | None = None  # torchrun: this process's rank (core/engine/distributed.py); None in one process
    resume: bool = False
    batch_size: int = 0
    eval_batch: int = 16  # halved on CUDA out-of-memory during evaluation, like batch_size during training
    gen: torch.Generator = None  # batch order and augmentation: part of the checkpoint
    notes: list[str] = field(default_factory=list)
    # content hashes and duplicate-search fingerprints of the files the run's decoding read: the end of the run
    # (leakage, record) reads no file again
    gathered: Gathered | None = None
    # a fine-tuning that starts from a trained model of the same classes (LP-FT, init_from): the start is scored
    # before the first epoch and stays the best weights unless an epoch beats it on validation
    start_is_candidate: bool = False
    start_eval: EvalResult | None = None
    t0: float = field(default_factory=time.perf_counter)

    def emit(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)



def best_epoch(history: list[dict]) -> dict | None:
    """The metrics line of the best epoch: highest validation accuracy, then lowest loss (None: no epoch finished)."""
    return max(history, key=lambda m: (m["val_acc"], -m["val_loss"])) if history else None


def beats_start(best: dict | None, start: EvalResult | None) -> bool:
    """Whether the best epoch is delivered rather than a starting point that had to be beaten (ties: the start)."""
    return start is None or (best is not None and (best["val_acc"], -best["val_loss"]) > (start.acc, -start.loss))


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


@dataclass
class Optimization:
    """The optimizer, its schedule (a function of training progress) and the fp16 gradient scaler."""

    opt: torch.optim.Optimizer
    schedule: Callable[[float], float]
    scaler: torch.amp.GradScaler


def eta_seconds(elapsed: float, done: int, remaining: int) -> float:
    """Time left at this process's own pace: `done` counts only the steps (or epochs) this process ran, so a
    resumed run does not count the epochs before the resume against the time since it."""
    return elapsed / max(done, 1) * remaining


def epoch_loop(s: Session, net: nn.Module, batches: Callable[[int], Iterator], n_train: int,
               evaluate: Callable[[], EvalResult]) -> str:
    cfg = s.cfg
    s.objective = s.objective or Classify(cfg.label_smoothing)
    o = Optimization(build_optimizer(cfg, s.model, net), SCHEDULES[cfg.scheduler](cfg),
                     grad_scaler(s.device, cfg.amp))
    loop = _restore_checkpoint(s, o) if s.resume else LoopState()
    if s.dist:  # this rank trains on its share of every epoch, through DDP (gradients averaged across ranks)
        n_train, net = s.dist.shard_size(n_train), s.dist.wrap(net)
    start_epoch = loop.epoch  # epochs finished before this process started
    s.emit("on_fit_start", fit_info(s, steps_per_epoch(s, n_train)))
    best_state, t_fit = None, time.perf_counter()
    write_each_best = cfg.freeze != "probe"  # long epochs: keep the best on disk as it happens; probe: at end
    trainable = freeze.parameter_counts(s.model)[0]
    if s.start_is_candidate and loop.epoch == 0:  # the start must be beaten: it is the first best to deliver,
        s.start_eval = evaluate()                  # but early stopping watches the fine-tuning's own epochs
        loop.best_acc, loop.best_acc_loss = s.start_eval.acc, s.start_eval.loss
        best_state = state_copy(s.model if write_each_best else net)
        if write_each_best:
            save_weights(best_state, s.run.best_weights)
    for epoch in range(loop.epoch + 1, cfg.epochs + 1):
        if cfg.freeze == "gradual":
            freeze.apply_freeze(s.model, cfg, epoch=epoch - 1)
            trainable = freeze.parameter_counts(s.model)[0]
        t_ep = time.perf_counter()
        train_loss, train_acc, seen = _train_epoch_with_oom_retry(s, net, o, batches, epoch, n_train,
                                                                  (t_fit, start_epoch))
        if seen == 0:  # stopped before a single batch of this epoch finished
            break
        ev = evaluate()
        check_finite(train_loss, epoch, cfg)
        secs = time.perf_counter() - t_ep
        elapsed = time.perf_counter() - t_fit
        m = EpochMetrics(epoch, train_loss, train_acc, ev.loss, ev.acc, o.opt.param_groups[0]["lr"], seen / secs,
                         secs, elapsed, eta_seconds(elapsed, epoch - start_epoch, cfg.epochs - epoch), trainable,
                         ev.tasks)
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
        s.emit("on_epoch_end", m)  # first the metrics line, then the checkpoint: a kill between the two redoes
        if write_each_best:       # this epoch on resume, instead of resuming after a line that was never written
            _save_checkpoint(s, o, loop)
        stopping = s.dist.any(s.stop.is_set()) if s.dist else s.stop.is_set()  # ranks stop together
        if stopping or (cfg.early_stopping and loop.since_improved >= cfg.early_stopping):
            break
    if best_state is None and not s.run.best_weights.exists():  # stopped in epoch 1: keep what exists
        best_state = state_copy(s.model if write_each_best else net)
    if best_state is not None and (not write_each_best or not s.run.best_weights.exists()):
        (s.model if write_each_best else net).load_state_dict(best_state)
        save_weights(state_copy(s.model), s.run.best_weights)
    return "stopped" if s.stop.is_set() else "completed"


def steps_per_epoch(s: Session, n_train: int) -> int:
    return max(1, math.ceil(n_train / s.batch_size))


def _train_epoch_with_oom_retry(s: Session, net: nn.Module, o: Optimization, batches, epoch: int, n_train: int,
                                clock: tuple[float, int]) -> tuple[float, float, int]:
    """On CUDA out-of-memory, halve the batch size and run the epoch again (and say so). The schedule follows
    training progress, so the learning rate goes on from where the epoch started, not from a step count."""
    while True:
        try:
            return _train_one_epoch(s, net, o, batches(epoch), epoch, steps_per_epoch(s, n_train), clock)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if s.batch_size <= 1:
                raise TrainingError("The GPU ran out of memory even with batch size 1. Choose a smaller "
                                    "backbone or a smaller image size.") from None
            o.opt.zero_grad(set_to_none=True)
            free_cached_memory()
            s.batch_size //= 2
            s.notes.append(f"GPU out of memory in epoch {epoch}: batch size halved to {s.batch_size}.")
            s.emit("on_phase", s.notes[-1], 0, 0)


def _save_checkpoint(s: Session, o: Optimization, loop: LoopState) -> None:
    """Everything needed to resume after the last finished epoch (read back with weights_only=True). The schedule
    is a function of progress, so it needs no state of its own."""
    buf = io.BytesIO()
    torch.save({"model": s.model.state_dict(), "optimizer": o.opt.state_dict(), "scaler": o.scaler.state_dict(),
                "loop": asdict(loop), "rng": torch.get_rng_state(), "batch_rng": s.gen.get_state(),
                "batch_size": s.batch_size}, buf)
    atomic_write_bytes(s.run.last_checkpoint, buf.getvalue())


def _restore_checkpoint(s: Session, o: Optimization) -> LoopState:
    if not s.run.last_checkpoint.exists():  # nothing finished (or a probe run): start over in the same run
        s.run.keep_metrics(0)
        return LoopState()
    ck = torch.load(s.run.last_checkpoint, map_location=s.device, weights_only=True)
    s.model.load_state_dict(ck["model"])
    o.opt.load_state_dict(ck["optimizer"])
    if "scaler" in ck:
        o.scaler.load_state_dict(ck["scaler"])
    torch.set_rng_state(ck["rng"].cpu())
    s.gen.set_state(ck["batch_rng"].cpu())
    s.batch_size = ck["batch_size"]
    loop = LoopState(**ck["loop"])
    s.run.keep_metrics(loop.epoch)
    return loop


def _train_one_epoch(s: Session, net: nn.Module, o: Optimization, batch_iter: Iterator, epoch: int, steps: int,
                     clock: tuple[float, int]) -> tuple[float, float, int]:
    cfg, (t_fit, start_epoch) = s.cfg, clock
    freeze.set_train_mode(net, freeze.batchnorm_mode(cfg))  # BatchNorm: see freeze.batchnorm_mode
    s.objective.reset()  # an objective's tally of the epoch (MultiTask: each task's accuracy) starts over
    loss_sum = torch.zeros((), device=s.device)
    correct = torch.zeros((), device=s.device, dtype=torch.long)
    scored = torch.zeros((), device=s.device, dtype=torch.long)  # examples with a label (accuracy's denominator)
    seen, t_ep, last_report = 0, time.perf_counter(), 0.0
    for step, batch in enumerate(batch_iter, start=1):
        set_lr(o.opt, o.schedule(((epoch - 1) + step / steps) / cfg.epochs))
        with autocast(s.device, cfg.amp):
            out = s.objective(net, batch)
        backward_step(o.opt, o.scaler, out.loss)
        loss_sum += out.loss.detach() * out.size
        if out.correct is not None:
            correct += out.correct
        seen += out.size
        scored += out.size if out.labeled is None else out.labeled
        now = time.perf_counter()
        if now - last_report >= REPORT_EVERY_S or step == steps:
            last_report = now
            loss_val = out.loss.item()  # the only sync point in the loop
            check_finite(loss_val, epoch, cfg, step)
            done_here = (epoch - 1 - start_epoch) * steps + step
            remaining = (cfg.epochs - epoch + 1) * steps - step
            s.emit("on_batch_end", BatchMetrics(epoch, step, steps, loss_val, o.opt.param_groups[0]["lr"],
                                                seen / (now - t_ep), now - t_fit,
                                                eta_seconds(now - t_fit, done_here, remaining)))
        if s.stop.is_set() and s.dist is None:  # several processes stop together, at the epoch's end
            break
    if s.dist:  # the epoch's figures over every rank, and rank 0's model on every rank before evaluating
        loss_sum, correct, total, scored = s.dist.sum(loss_sum, correct, seen, scored)
        s.dist.sync_from_main(s.model)
        return (loss_sum / total.clamp_min(1)).item(), (correct / scored.clamp_min(1)).item(), int(total.item())
    return (loss_sum / max(seen, 1)).item(), (correct.float() / scored.clamp_min(1)).item(), seen


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
