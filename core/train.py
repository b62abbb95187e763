"""The training engine: dataset -> pretrained backbone -> fine-tuned classifier in a run folder.

`train(cfg)` is the one entry point used by the CLI, the job registry (web UI) and the tests. It knows
nothing about who watches: progress goes out through `Callback` hooks as plain floats, and a stop flag is
checked after every batch. Two paths share one epoch loop:
- probe: the frozen backbone runs once per image (features.py); the head trains on cached features;
- partial / full / gradual: images are decoded once into a uint8 store; augmentation runs on batches.
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
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from core import backbones
from core.augment import Preprocessor
from core.callbacks import BatchMetrics, Callback, EpochMetrics, FitInfo, FitResult, RunRecorder
from core.config import TrainConfig
from core.data import Dataset, Sample, open_dataset
from core.device import autocast, pick_device, set_threads
from core.features import Backbone, FeatureCache, extract_features, model_key
from core.images import decode_images
from core.metrics import classification_report
from core.optim import SCHEDULES, build_optimizer
from core.runs import RunDir, atomic_write_bytes, atomic_write_json, create_run_dir

__all__ = ["train", "TrainingError", "Callback", "FitInfo", "BatchMetrics", "EpochMetrics", "FitResult"]

REPORT_EVERY_S = 0.5
EVAL_BATCH_CPU = 16  # small batches are faster per image on these CPUs (cache effects, measured)
EVAL_BATCH_CUDA = 256
MEMMAP_ABOVE_BYTES = 2 * 1024**3  # decoded images beyond this go to a memory-mapped file, not RAM
PREFIX_CACHE_MAX_BYTES = 1024**3  # cached frozen-prefix outputs (Lite0, 224 px: 63 KB per image)


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to change."""


@dataclass
class _EvalResult:
    loss: float
    acc: float
    probs: np.ndarray


@dataclass
class _Session:
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


# -------------------------------------------------------------------------------------------------------
# entry point

def train(cfg: TrainConfig, callbacks: Sequence[Callback] = (), stop: threading.Event | None = None,
          run: RunDir | None = None, resume: bool = False) -> FitResult:
    """Train per cfg into a new run folder (or `run`); returns the final status and summary.

    With resume=True, `run` is an earlier run of the same cfg: training goes on after its last finished
    epoch (from last.ckpt) and ends with the same number of epochs as an uninterrupted run.
    """
    cfg.validate()
    run = run or create_run_dir(cfg.output_dir)
    if not resume:
        cfg.save(run.config)
    s = _Session(cfg, run, [RunRecorder(run), *callbacks], stop or threading.Event(), resume=resume)
    try:
        _prepare(s)
        fit = _fit_probe if cfg.freeze == "probe" else _fit_finetune
        status = fit(s)
        result = _finish(s, status)
    except BaseException as exc:
        s.emit("on_exception", exc)
        raise
    s.emit("on_fit_end", result)
    return result


def _prepare(s: _Session) -> None:
    cfg = s.cfg
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    s.gen = torch.Generator().manual_seed(cfg.seed)
    s.batch_size = cfg.batch_size
    s.device = pick_device(cfg.device)
    s.dataset = open_dataset(cfg.data, cfg.val_fraction, cfg.seed, extract_dir=s.cache_dir / "datasets")
    s.model = backbones.create_model(cfg, len(s.dataset.classes)).to(s.device)
    s.model = s.model.to(memory_format=torch.channels_last)
    s.data_cfg = backbones.data_config(s.model, cfg.img_size)
    s.pre = Preprocessor(s.data_cfg, s.device)
    backbones.apply_freeze(s.model, cfg, epoch=0)


def _fit_info(s: _Session, steps_per_epoch: int) -> FitInfo:
    trainable, total = backbones.parameter_counts(s.model)
    ds = s.dataset
    return FitInfo(s.run.run_id, str(s.run.path), s.cfg.freeze, str(s.device), ds.classes, ds.counts(),
                   [{"path": k.path, "reason": k.reason} for k in ds.skipped], ds.warnings, trainable, total,
                   s.cfg.epochs, steps_per_epoch)


# -------------------------------------------------------------------------------------------------------
# probe: features once, head on the cache

def _fit_probe(s: _Session) -> str:
    cfg, ds = s.cfg, s.dataset
    key = model_key(cfg.backbone, cfg.weights, _weights_digest(cfg), s.data_cfg)
    backbone = Backbone(s.model, s.data_cfg, s.device, s.cache_dir / "onnx" / f"{key}.onnx", cfg.amp)
    cache = FeatureCache(s.cache_dir / "features" / f"{key}.npz")
    geom = backbones.geometry(s.data_cfg)

    # ONNX Runtime wants plain NCHW; torch on CUDA is fastest with channels_last
    pre = Preprocessor(s.data_cfg, s.device, channels_last=not backbone.uses_ort)
    # one pass over train + val, so decoding never waits for a phase boundary
    n_train, samples = len(ds.train), ds.train + ds.val
    views = [cfg.probe_views] * n_train + [1] * len(ds.val)
    exact = [False] * n_train + [True] * len(ds.val)  # validation decodes exactly like the exported model
    feats, failed = extract_features(samples, views, exact, backbone, pre, geom, cache,
                                     progress=lambda d, t: s.emit("on_phase", "computing features", d, t),
                                     should_stop=s.stop.is_set)
    ds.drop(failed)
    if s.stop.is_set():
        return "stopped"
    if not ds.train or not ds.val:
        raise TrainingError("No image of the training or validation split could be decoded; the run's skipped "
                            "list says why for each file.")
    train_x = np.stack([f for f in feats[:n_train] if f is not None])
    val_x = np.stack([f[0] for f in feats[n_train:] if f is not None])
    views = train_x.shape[1]
    train_x = torch.from_numpy(train_x.reshape(-1, train_x.shape[-1])).to(s.device)
    train_y = torch.tensor([x.label for x in ds.train for _ in range(views)], device=s.device)
    val_x, val_y = torch.from_numpy(val_x).to(s.device), _labels(ds.val, s.device)
    head = s.model.get_classifier()

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(train_y), generator=s.gen).to(s.device)
        for i in range(0, len(order), s.batch_size):
            idx = order[i:i + s.batch_size]
            yield train_x[idx], train_y[idx]

    def evaluate() -> _EvalResult:
        with torch.inference_mode():
            return _scores(head(val_x), val_y)
    s.final_logits = lambda: head(val_x)
    return _epoch_loop(s, head, batches, len(train_y), evaluate)


# -------------------------------------------------------------------------------------------------------
# partial / full / gradual: decode once, augment batches

def _fit_finetune(s: _Session) -> str:
    cfg, ds = s.cfg, s.dataset
    geom = backbones.geometry(s.data_cfg)
    total = len(ds.train) + len(ds.val)
    s.emit("on_phase", "decoding images", 0, total)
    # training images only feed augmentation: the fast decode; validation decodes like the exported model
    train_u8, failed_t = decode_images(ds.train, *geom, out=_image_store(s, "train", len(ds.train), geom[0]),
                                       exact=False,
                                       progress=lambda d, _: s.emit("on_phase", "decoding images", d, total))
    val_u8, failed_v = decode_images(ds.val, *geom, out=_image_store(s, "val", len(ds.val), geom[0]),
                                     progress=lambda d, _: s.emit("on_phase", "decoding images",
                                                                  len(ds.train) + d, total))
    # rows of images that decoded; indices instead of copies, so a memory-mapped store stays on disk
    train_rows, val_rows = _good_rows(ds.train, failed_t), _good_rows(ds.val, failed_v)
    ds.drop(failed_t + failed_v)
    s.emit("on_phase", "decoding images", len(ds.train) + len(ds.val), len(ds.train) + len(ds.val))
    train_y, val_y = _labels(ds.train, torch.device("cpu")), _labels(ds.val, s.device)

    # partial freezing: the frozen prefix's outputs never change, so they are computed once (validation
    # always; training images when augmentation is off) and the epochs run only the rest of the network
    net, prefix = s.model, None
    split = backbones.split_frozen_prefix(s.model) if cfg.freeze == "partial" else None
    if split is not None:
        prefix, net = split
        prefix.eval()  # frozen BatchNorm keeps its statistics; set_train_mode(net) never reaches the prefix
        val_src = _prefix_outputs(s, prefix, val_u8, val_rows, "validation")
        train_src = _prefix_outputs(s, prefix, train_u8, train_rows, "training") \
            if cfg.augmentation == "none" else None
    else:
        val_src = train_src = None

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        bs, g = s.batch_size, s.gen
        order = torch.randperm(len(train_y), generator=g)
        n = len(order) - (len(order) % bs == 1)  # a batch of one breaks BatchNorm in train mode
        if prefix is not None:
            prefix.eval()
        for i in range(0, n, bs):
            idx = order[i:i + bs].sort().values  # sorted: sequential reads from a memory-mapped store
            if train_src is not None:
                yield train_src[idx.to(train_src.device)], train_y[idx].to(s.device)
                continue
            x_u8 = torch.from_numpy(train_u8[train_rows[idx.numpy()]])
            if s.device.type == "cuda":
                x_u8 = x_u8.pin_memory()  # lets the copy to the GPU overlap with compute (non_blocking)
            x = s.pre.train_view(x_u8, cfg.augmentation, g)
            if prefix is not None:
                with torch.no_grad():
                    x = prefix(x)
            yield x, train_y[idx].to(s.device, non_blocking=True)

    def logits() -> torch.Tensor:
        if val_src is not None:
            return _run_batched(s, net, val_src)
        return _run_batched(s, s.model, images_u8=val_u8, rows=val_rows)

    def evaluate() -> _EvalResult:
        return _scores(logits(), val_y)
    s.final_logits = logits
    return _epoch_loop(s, net, batches, len(train_y), evaluate)


def _prefix_outputs(s: _Session, prefix: nn.Module, images_u8: np.ndarray, rows: np.ndarray,
                    split: str) -> torch.Tensor | None:
    """The frozen prefix run once over a split (eval mode, no autograd), kept on the training device;
    None when that would take more than PREFIX_CACHE_MAX_BYTES (the epochs then run the prefix each time)."""
    with torch.no_grad():
        one = prefix(s.pre.eval_view(torch.from_numpy(images_u8[rows[:1]]))) if len(rows) else None
    if one is None or one.element_size() * one.numel() * len(rows) > PREFIX_CACHE_MAX_BYTES:
        return None
    phase = f"frozen layers, once ({split})"
    s.emit("on_phase", phase, 0, len(rows))
    out = _run_batched(s, prefix, images_u8=images_u8, rows=rows, no_grad=True)
    s.emit("on_phase", phase, len(rows), len(rows))
    return out


def _run_batched(s: _Session, module: nn.Module, inputs: torch.Tensor | None = None,
                 images_u8: np.ndarray | None = None, rows: np.ndarray | None = None,
                 no_grad: bool = False) -> torch.Tensor:
    """module in eval mode over cached inputs or decoded images, in evaluation batches."""
    s.model.eval()
    bs = EVAL_BATCH_CUDA if s.device.type == "cuda" else EVAL_BATCH_CPU
    n = len(inputs) if inputs is not None else len(rows)
    out = []
    # no_grad, not inference_mode: cached prefix outputs are later saved for backward by the layers after them
    with (torch.no_grad() if no_grad else torch.inference_mode()), autocast(s.device, s.cfg.amp):
        for i in range(0, n, bs):
            x = inputs[i:i + bs] if inputs is not None else \
                s.pre.eval_view(torch.from_numpy(images_u8[rows[i:i + bs]]))
            out.append(module(x) if no_grad else module(x).float())
    return torch.cat(out) if out else torch.zeros(0, len(s.dataset.classes), device=s.device)


def _image_store(s: _Session, split: str, n: int, size: int) -> np.ndarray:
    """In memory for normal sets; a memory-mapped file in the run folder past MEMMAP_ABOVE_BYTES."""
    if n * size * size * 3 <= MEMMAP_ABOVE_BYTES:
        return np.zeros((n, size, size, 3), dtype=np.uint8)
    path = s.run.path / f"decoded-{split}.npy"  # removed when the run ends (_finish)
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))


# -------------------------------------------------------------------------------------------------------
# the shared epoch loop

@dataclass
class _LoopState:
    """What the epoch loop carries from one epoch to the next (and across a resume)."""

    epoch: int = 0
    best_acc: float = -1.0
    best_acc_loss: float = math.inf
    best_loss: float = math.inf
    since_improved: int = 0


def _epoch_loop(s: _Session, net: nn.Module, batches: Callable[[int], Iterator], n_train: int,
                evaluate: Callable[[], _EvalResult]) -> str:
    cfg = s.cfg
    steps = max(1, math.ceil(n_train / s.batch_size))
    opt = build_optimizer(s.cfg, s.model, net)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, SCHEDULES[cfg.scheduler](cfg, steps * cfg.epochs))
    scaler = torch.amp.GradScaler(enabled=s.device.type == "cuda" and cfg.amp == "fp16")
    loop = _restore_checkpoint(s, opt, sched) if s.resume else _LoopState()
    s.emit("on_fit_start", _fit_info(s, steps))
    best_state, t_fit = None, time.perf_counter()
    write_each_best = cfg.freeze != "probe"  # long epochs: keep the best on disk as it happens; probe: at end
    trainable = backbones.parameter_counts(s.model)[0]
    for epoch in range(loop.epoch + 1, cfg.epochs + 1):
        if cfg.freeze == "gradual":
            backbones.apply_freeze(s.model, cfg, epoch=epoch - 1)
            trainable = backbones.parameter_counts(s.model)[0]
        t_ep = time.perf_counter()
        train_loss, train_acc, seen = _train_epoch_with_oom_retry(s, net, opt, sched, scaler, batches, epoch,
                                                                  n_train, t_fit)
        if seen == 0:  # stopped before a single batch of this epoch finished
            break
        ev = evaluate()
        _check_finite(train_loss, epoch, cfg)
        secs = time.perf_counter() - t_ep
        elapsed = time.perf_counter() - t_fit
        done = epoch - loop.epoch if s.resume else epoch
        m = EpochMetrics(epoch, train_loss, train_acc, ev.loss, ev.acc, opt.param_groups[0]["lr"], seen / secs,
                         secs, elapsed, elapsed / max(done, 1) * (cfg.epochs - epoch), trainable)
        if (ev.acc, -ev.loss) > (loop.best_acc, -loop.best_acc_loss):  # best = accuracy, then lower loss
            loop.best_acc, loop.best_acc_loss = ev.acc, ev.loss
            best_state = _state_copy(s.model if write_each_best else net)  # probe: only the head changes
            if write_each_best:
                _save_weights(best_state, s.run.best_weights)
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
        best_state = _state_copy(s.model if write_each_best else net)
    if best_state is not None and (not write_each_best or not s.run.best_weights.exists()):
        (s.model if write_each_best else net).load_state_dict(best_state)
        _save_weights(_state_copy(s.model), s.run.best_weights)
    return "stopped" if s.stop.is_set() else "completed"


def _train_epoch_with_oom_retry(s: _Session, net, opt, sched, scaler, batches, epoch: int, n_train: int,
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


def _save_checkpoint(s: _Session, opt, sched, loop: _LoopState) -> None:
    """Everything needed to resume after the last finished epoch (read back with weights_only=True)."""
    buf = io.BytesIO()
    torch.save({"model": s.model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "loop": asdict(loop), "rng": torch.get_rng_state(), "batch_rng": s.gen.get_state(),
                "batch_size": s.batch_size}, buf)
    atomic_write_bytes(s.run.last_checkpoint, buf.getvalue())


def _restore_checkpoint(s: _Session, opt, sched) -> _LoopState:
    if not s.run.last_checkpoint.exists():  # nothing finished (or a probe run): start over in the same run
        s.run.keep_metrics(0)
        return _LoopState()
    ck = torch.load(s.run.last_checkpoint, map_location=s.device, weights_only=True)
    s.model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    torch.set_rng_state(ck["rng"].cpu())
    s.gen.set_state(ck["batch_rng"].cpu())
    s.batch_size = ck["batch_size"]
    loop = _LoopState(**ck["loop"])
    s.run.keep_metrics(loop.epoch)
    return loop


def _train_one_epoch(s: _Session, net: nn.Module, opt, sched, scaler, batch_iter: Iterator, epoch: int,
                     steps: int, t_fit: float) -> tuple[float, float, int]:
    cfg = s.cfg
    backbones.set_train_mode(net)  # frozen BatchNorm layers stay in eval mode
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
            _check_finite(loss_val, epoch, cfg, step)
            done = (epoch - 1) * steps + step
            elapsed = now - t_fit
            s.emit("on_batch_end", BatchMetrics(epoch, step, steps, loss_val, opt.param_groups[0]["lr"],
                                                seen / (now - t_ep), elapsed,
                                                elapsed / done * (cfg.epochs * steps - done)))
        if s.stop.is_set():
            break
    return (loss_sum / max(seen, 1)).item(), (correct.float() / max(seen, 1)).item(), seen


# -------------------------------------------------------------------------------------------------------
# results

def _finish(s: _Session, status: str) -> FitResult:
    """Reload the best weights, evaluate, write summary.json and the export bundle."""
    from core.export import write_bundle
    if not s.run.best_weights.exists():
        summary = {"status": status, "train_seconds": time.perf_counter() - s.t0, "note": "stopped before "
                   "any training happened; nothing to export"}
        atomic_write_json(s.run.summary_file, summary)
        return FitResult(status, str(s.run.path), summary)
    s.model.load_state_dict(load_file(str(s.run.best_weights)))
    with torch.inference_mode():
        probs = F.softmax(s.final_logits().float(), dim=1).cpu().numpy()
    summary = build_summary(s, probs, status)
    atomic_write_json(s.run.dataset_file, s.dataset.summary())
    atomic_write_json(s.run.summary_file, summary)
    write_bundle(s.model, s.data_cfg, s.dataset.classes, s.cfg, summary, s.run.bundle_dir)
    for store in s.run.path.glob("decoded-*.npy"):  # memory-mapped image stores of large sets
        store.unlink()
    return FitResult(status, str(s.run.path), summary)


def build_summary(s: _Session, probs: np.ndarray, status: str) -> dict:
    ds = s.dataset
    y_true = np.array([x.label for x in ds.val], dtype=np.int64)
    y_pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=np.int64)
    report = classification_report(y_true, y_pred, ds.classes)
    history = s.run.read_metrics()
    best = max(history, key=lambda m: (m["val_acc"], -m["val_loss"])) if history else None
    predictions = [{"path": x.path, "true": ds.classes[x.label], "pred": ds.classes[int(p.argmax())],
                    "confidence": float(p.max())} for x, p in zip(ds.val, probs, strict=True)]
    return {
        "status": status, "val_accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
        "macro_precision": report["macro_precision"], "macro_recall": report["macro_recall"],
        "per_class": report["per_class"], "confusion_matrix": report["confusion_matrix"],
        "classes": ds.classes, "best_epoch": best["epoch"] if best else None,
        "epochs_run": len(history), "train_seconds": time.perf_counter() - s.t0,
        "num_train": len(ds.train), "num_val": len(ds.val), "skipped": [k.path for k in ds.skipped],
        "predictions": predictions, "device": str(s.device), "batch_size": s.batch_size, "notes": s.notes,
        "freeze": s.cfg.freeze, "backbone": s.cfg.backbone,
    }


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def _save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    atomic_write_bytes(path, safetensors_bytes(state))


def _scores(logits: torch.Tensor, y: torch.Tensor) -> _EvalResult:
    if len(y) == 0:
        return _EvalResult(float("nan"), float("nan"), np.zeros((0, logits.shape[1])))
    loss = F.cross_entropy(logits.float(), y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return _EvalResult(loss, acc, F.softmax(logits.float(), 1).cpu().numpy())


def _labels(samples: list[Sample], device: torch.device) -> torch.Tensor:
    return torch.tensor([x.label for x in samples], dtype=torch.long, device=device)


def _good_rows(samples: list[Sample], failed) -> np.ndarray:
    bad = {f.path for f in failed}
    return np.array([i for i, x in enumerate(samples) if x.path not in bad], dtype=np.int64)


def _check_finite(loss: float, epoch: int, cfg: TrainConfig, step: int | None = None) -> None:
    if not math.isfinite(loss):
        where = f"epoch {epoch}" + (f", step {step}" if step else "")
        raise TrainingError(f"The training loss became {loss} at {where}: training diverged. Lower the "
                            f"learning rate (now {cfg.lr:g}, try {cfg.lr / 10:g}) and start again.")


def _weights_digest(cfg: TrainConfig) -> str:
    if cfg.weights == "bundled":
        return backbones.bundled_weights_path().name
    if cfg.weights == "random":
        return f"random-seed{cfg.seed}"
    if cfg.weights == "hub":
        return "hub"
    from core.data import file_digest
    return file_digest(Path(cfg.weights))


