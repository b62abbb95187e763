"""Time and memory before training, from a few timed steps of the real model on this machine (and device).

A run's time is set-up (decoding every image once; for a probe, every uncached image through the backbone) plus
epochs x (training steps + one validation pass). Each part is timed on a handful of real images or batches and
scaled; nothing is read from a table of other machines.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass

import numpy as np
import torch

from core.config import TrainConfig
from core.data.dataset import Dataset
from core.data.images import decode_one, geometry
from core.device import autocast, backward_step, grad_scaler, pick_device
from core.engine.optim import build_optimizer
from core.models import freeze
from core.models.backbones import create_model, data_config
from core.models.objectives import Classify

DECODE_SAMPLE = 8  # images decoded to time decoding
WARMUP_STEPS = 2  # untimed: the first steps allocate memory and pick kernels, several times slower than the rest
STEPS = 6  # timed steps: the estimate takes their median, its range their fastest and slowest


@dataclass(frozen=True)
class Estimate:
    setup_seconds: float  # decoding (and, for a probe, features of every image)
    seconds_per_epoch: float
    epochs: int
    total_seconds: float
    peak_memory_mb: float  # CUDA: the most the timed steps allocated; CPU: the process's peak resident memory
    low_seconds: float = 0.0  # the total at the fastest and the slowest timed step (0: not timed per step)
    high_seconds: float = 0.0

    def describe(self) -> str:
        spread = f", {_minutes(self.low_seconds)} to {_minutes(self.high_seconds)}" \
            if self.high_seconds > self.low_seconds > 0 else ""
        return (f"about {_minutes(self.total_seconds)}{spread} ({_minutes(self.setup_seconds)} to read the images, "
                f"then {self.epochs} epochs of {self.seconds_per_epoch:.0f} s), peak memory about "
                f"{self.peak_memory_mb:,.0f} MB")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def estimate_run(cfg: TrainConfig, ds: Dataset) -> Estimate:
    """How long `train(cfg)` should take on this dataset here (cfg.freeze must be concrete, not auto)."""
    device = pick_device(cfg.device)
    model = create_model(cfg.replace(weights="random"), len(ds.classes)).to(device).eval()
    data_cfg = data_config(model, cfg.img_size)
    geom = geometry(data_cfg)
    n_train, n_val = len(ds.train), len(ds.val) + len(ds.test)
    decode_s = _decode_seconds(ds, geom) / max(1, torch.get_num_threads())  # decoding runs on every core
    forward_s = _forward_seconds(model, geom[1], device, cfg)
    if cfg.freeze == "probe":
        setup = (n_train * cfg.probe_views + n_val) * (decode_s + forward_s)
        return Estimate(setup, 0.05, cfg.epochs, setup + 0.05 * cfg.epochs, _peak_mb(device))
    freeze.apply_freeze(model, cfg)
    steps = _step_seconds(model, cfg, geom[1], device)
    setup = (n_train + n_val) * decode_s

    def total(step_s: float) -> float:
        return setup + cfg.epochs * (math.ceil(n_train / cfg.batch_size) * step_s + len(ds.val) * forward_s)
    epoch = (total(float(np.median(steps))) - setup) / cfg.epochs
    return Estimate(setup, epoch, cfg.epochs, setup + epoch * cfg.epochs, _peak_mb(device), total(min(steps)),
                    total(max(steps)))


def _decode_seconds(ds: Dataset, geom: tuple[int, int, str]) -> float:
    paths = [s.path for s in (ds.train + ds.val)[::max(1, len(ds.train + ds.val) // DECODE_SAMPLE)]][:DECODE_SAMPLE]
    t0 = time.perf_counter()
    for p in paths:
        decode_one(p, *geom, exact=False)
    return (time.perf_counter() - t0) / max(len(paths), 1)


def _forward_seconds(model, size: int, device: torch.device, cfg: TrainConfig) -> float:
    """Seconds per image of an evaluation forward pass, at the engine's evaluation batch."""
    x = torch.randn(16, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, cfg.amp):
        model(x)  # warm-up, at the timed batch size
        t0 = time.perf_counter()
        model(x)
        model(x)
        _sync(device)
    return (time.perf_counter() - t0) / (2 * len(x))


def _step_seconds(model, cfg: TrainConfig, size: int, device: torch.device) -> list[float]:
    """Seconds of each timed training step (forward, loss, backward, optimizer) at cfg.batch_size, after
    WARMUP_STEPS untimed ones."""
    opt, scaler = build_optimizer(cfg, model, model), grad_scaler(device, cfg.amp)  # as the training steps
    objective = Classify(cfg.label_smoothing)
    freeze.set_train_mode(model, freeze.batchnorm_mode(cfg))
    x = torch.randn(cfg.batch_size, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.zeros(cfg.batch_size, dtype=torch.long, device=device)
    times = []
    for i in range(WARMUP_STEPS + STEPS):
        t0 = time.perf_counter()
        with autocast(device, cfg.amp):
            loss = objective(model, (x, y)).loss
        backward_step(opt, scaler, loss)
        _sync(device)
        if i >= WARMUP_STEPS:
            times.append(time.perf_counter() - t0)
    return times


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
