"""Learning-rate range test (Smith 2015; fastai's lr_find): train a few dozen steps while the learning rate grows
exponentially, record the loss, and suggest a rate a little below where the loss falls fastest.

It runs on a copy of the configured model and a sample of training images decoded once (no augmentation), so
it takes seconds to a minute and changes nothing; the suggestion is one click (Model page) or one flag away.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from core.config import TrainConfig
from core.data.augment import Preprocessor
from core.data.dataset import Dataset
from core.data.images import decode_images, geometry
from core.device import autocast, backward_step, grad_scaler, halving_on_oom, pick_device
from core.engine.optim import build_optimizer, set_lr
from core.errors import TrainingError
from core.models import freeze
from core.models.backbones import create_model, data_config
from core.models.objectives import Classify

START_LR, END_LR, STEPS = 1e-6, 1.0, 60
MAX_IMAGES = 256
DIVERGED = 4.0  # stop once the smoothed loss is this many times its minimum


@dataclass(frozen=True)
class LRFinding:
    lrs: list[float]
    losses: list[float]  # smoothed (exponential moving average, bias-corrected)
    suggestion: float

    def describe(self) -> str:
        return (f"Suggested learning rate {self.suggestion:.1e}: a decade below the rate at the lowest loss of a "
                f"{len(self.lrs)}-step sweep from {self.lrs[0]:.0e} to {self.lrs[-1]:.0e}.")


def find_lr(cfg: TrainConfig, ds: Dataset, progress: Callable[[str, int, int], None] | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> LRFinding:
    """The sweep for cfg's model and freezing (auto sweeps like partial) on up to MAX_IMAGES training images."""
    cfg = cfg.replace(freeze="partial") if cfg.freeze == "auto" else cfg
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    model = create_model(cfg, len(ds.classes), ds.classes).to(device).to(memory_format=torch.channels_last)
    data_cfg = data_config(model, cfg.img_size)
    freeze.apply_freeze(model, cfg)
    rng = np.random.default_rng(cfg.seed)
    samples = [ds.train[i] for i in sorted(rng.permutation(len(ds.train))[:MAX_IMAGES])]
    images, failed = decode_images(samples, *geometry(data_cfg), exact=False)
    keep = [i for i, s in enumerate(samples) if s.path not in {f.path for f in failed}]
    if len(keep) < 2:
        raise TrainingError("Too few training images could be decoded for a learning-rate range test.")
    x_all = torch.from_numpy(images[keep])
    y_all = torch.tensor([samples[i].label for i in keep])
    pre, objective = Preprocessor(data_cfg, device), Classify(cfg.label_smoothing)
    opt, scaler = build_optimizer(cfg, model, model), grad_scaler(device, cfg.amp)  # fp16 needs loss scaling
    freeze.set_train_mode(model, freeze.batchnorm_mode(cfg))
    lrs, losses, avg, best = [], [], 0.0, math.inf
    sizes = [min(cfg.batch_size, len(keep))]  # the batch size in use: halved (for good) on CUDA out-of-memory

    def train_step(bs: int) -> float:
        idx = torch.from_numpy(rng.choice(len(keep), bs, replace=False))
        with autocast(device, cfg.amp):
            loss = objective(model, (pre.eval_view(x_all[idx]), y_all[idx].to(device))).loss
        backward_step(opt, scaler, loss)
        return loss.item()
    for step in range(STEPS):
        if should_stop():
            break
        lr = START_LR * (END_LR / START_LR) ** (step / (STEPS - 1))
        set_lr(opt, lr / cfg.lr)  # every group keeps its ratio to the head's rate (backbone_lr_mult)
        avg = 0.9 * avg + 0.1 * halving_on_oom(train_step, sizes[-1], sizes.append)
        smooth = avg / (1 - 0.9 ** (step + 1))
        if not math.isfinite(smooth) or (step > 5 and smooth > DIVERGED * best):
            break
        best = min(best, smooth)
        lrs.append(lr)
        losses.append(smooth)
        if progress:
            progress("learning-rate sweep", step + 1, STEPS)
    return LRFinding(lrs, losses, _suggest(lrs, losses))


def _suggest(lrs: list[float], losses: list[float]) -> float:
    """fastai's 'minimum / 10': a decade below the rate at the lowest smoothed loss (robust on noisy sweeps)."""
    if not losses:
        return 1e-3
    return float(min(max(lrs[int(np.argmin(losses))] / 10, 1e-5), 1e-1))
