"""The training engine: dataset -> pretrained backbone -> fine-tuned classifier in a run folder.

`train(cfg)` is the one entry point used by the CLI, the job registry (web UI) and the tests. It knows
nothing about who watches: progress goes out through `Callback` hooks as plain floats, and a stop flag is
checked after every batch. Two paths share one epoch loop:
- probe: the frozen backbone runs once per image (features.py); the head trains on cached features;
- partial / full / gradual: images are decoded once into a uint8 store; augmentation runs on batches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from core.analysis.metrics import classification_report
from core.config import TrainConfig
from core.data.augment import Preprocessor
from core.data.dataset import Sample, open_dataset
from core.data.images import PROGRESS_EVERY, decode_images, geometry
from core.device import autocast, pick_device, set_threads
from core.engine.callbacks import BatchMetrics, Callback, EpochMetrics, FitInfo, FitResult, RunRecorder
from core.engine.loop import EvalResult, Session, epoch_loop, scores
from core.errors import TrainingError
from core.files.atomic import atomic_write_json, share_file
from core.models import backbones, freeze
from core.models.features import Backbone, FeatureCache, extract_features, model_key
from core.runs import RunDir, create_run_dir

__all__ = ["train", "TrainingError", "Callback", "FitInfo", "BatchMetrics", "EpochMetrics", "FitResult"]

EVAL_BATCH_CPU = 16  # small batches are faster per image on these CPUs (cache effects, measured)
EVAL_BATCH_CUDA = 256
MEMMAP_ABOVE_BYTES = 2 * 1024**3  # decoded images beyond this go to a memory-mapped file, not RAM
PREFIX_CACHE_MAX_BYTES = 1024**3  # cached frozen-prefix outputs (Lite0, 224 px: 63 KB per image)


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
    s = Session(cfg, run, [RunRecorder(run), *callbacks], stop or threading.Event(), resume=resume)
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


def _prepare(s: Session) -> None:
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
    freeze.apply_freeze(s.model, cfg, epoch=0)


# -------------------------------------------------------------------------------------------------------
# probe: features once, head on the cache

def _fit_probe(s: Session) -> str:
    cfg, ds = s.cfg, s.dataset
    key = model_key(cfg.backbone, cfg.weights, _weights_digest(cfg), s.data_cfg)
    backbone = Backbone(s.model, s.data_cfg, s.device, s.cache_dir / "onnx", key, cfg.amp)
    cache = FeatureCache(s.cache_dir / "features" / f"{key}.npz")
    geom = geometry(s.data_cfg)
    # one pass over train + val, so decoding never waits for a phase boundary
    n_train, samples = len(ds.train), ds.train + ds.val
    views = [cfg.probe_views] * n_train + [1] * len(ds.val)
    exact = [False] * n_train + [True] * len(ds.val)  # validation decodes exactly like the exported model
    s.emit("on_phase", "computing features", 0, len(samples))
    feats, failed = extract_features(samples, views, exact, backbone, geom, cache,
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

    def evaluate() -> EvalResult:
        with torch.inference_mode():
            return scores(head(val_x), val_y)
    s.final_logits = lambda: head(val_x)
    return epoch_loop(s, head, batches, len(train_y), evaluate)


# -------------------------------------------------------------------------------------------------------
# partial / full / gradual: decode once, augment batches

def _fit_finetune(s: Session) -> str:
    cfg, ds = s.cfg, s.dataset
    geom = geometry(s.data_cfg)
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
    split = freeze.split_frozen_prefix(s.model) if cfg.freeze == "partial" else None
    if split is not None:
        prefix, net = split
        # eval before any pass: its BatchNorm statistics stay as they are. `net` holds the whole model, so
        # set_train_mode(net) flips the prefix back to train mode each epoch; batches() sets eval again.
        prefix.eval()
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

    def evaluate() -> EvalResult:
        return scores(logits(), val_y)
    s.final_logits = logits
    return epoch_loop(s, net, batches, len(train_y), evaluate)


def _prefix_outputs(s: Session, prefix: nn.Module, images_u8: np.ndarray, rows: np.ndarray,
                    split: str) -> torch.Tensor | None:
    """The frozen prefix run once over a split (eval mode, no autograd), kept on the training device;
    None when that would take more than PREFIX_CACHE_MAX_BYTES (the epochs then run the prefix each time)."""
    with torch.no_grad():
        one = prefix(s.pre.eval_view(torch.from_numpy(images_u8[rows[:1]]))) if len(rows) else None
    if one is None or one.element_size() * one.numel() * len(rows) > PREFIX_CACHE_MAX_BYTES:
        return None
    phase = f"frozen layers, once ({split})"
    s.emit("on_phase", phase, 0, len(rows))
    return _run_batched(s, prefix, images_u8=images_u8, rows=rows, no_grad=True,
                        progress=lambda done: s.emit("on_phase", phase, done, len(rows)))


def _run_batched(s: Session, module: nn.Module, inputs: torch.Tensor | None = None,
                 images_u8: np.ndarray | None = None, rows: np.ndarray | None = None,
                 no_grad: bool = False, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """module in eval mode over cached inputs or decoded images, in evaluation batches; progress(done) is
    called every PROGRESS_EVERY images and at the end."""
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
            done = min(i + bs, n)
            if progress and (done % PROGRESS_EVERY < bs or done == n):
                progress(done)
    return torch.cat(out) if out else torch.zeros(0, len(s.dataset.classes), device=s.device)


def _image_store(s: Session, split: str, n: int, size: int) -> np.ndarray:
    """In memory for normal sets; a memory-mapped file in the run folder past MEMMAP_ABOVE_BYTES."""
    if n * size * size * 3 <= MEMMAP_ABOVE_BYTES:
        return np.zeros((n, size, size, 3), dtype=np.uint8)
    path = s.run.path / f"decoded-{split}.npy"  # removed when the run ends (_finish)
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))


# -------------------------------------------------------------------------------------------------------
# results

def _finish(s: Session, status: str) -> FitResult:
    """Reload the best weights, evaluate, write summary.json and the export bundle."""
    from core.export.bundle import write_bundle
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
    share_file(s.run.bundle_dir / "model.safetensors", s.run.best_weights)  # one copy of the weights
    for store in s.run.path.glob("decoded-*.npy"):  # memory-mapped image stores of large sets
        store.unlink()
    return FitResult(status, str(s.run.path), summary)


def build_summary(s: Session, probs: np.ndarray, status: str) -> dict:
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


def _labels(samples: list[Sample], device: torch.device) -> torch.Tensor:
    return torch.tensor([x.label for x in samples], dtype=torch.long, device=device)


def _good_rows(samples: list[Sample], failed) -> np.ndarray:
    bad = {f.path for f in failed}
    return np.array([i for i, x in enumerate(samples) if x.path not in bad], dtype=np.int64)


def _weights_digest(cfg: TrainConfig) -> str:
    if cfg.weights == "bundled":
        return backbones.bundled_weights_path().name
    if cfg.weights == "random":
        return f"random-seed{cfg.seed}"
    if cfg.weights == "hub":
        return "hub"
    from core.files.digest import file_digest
    return file_digest(Path(cfg.weights))


