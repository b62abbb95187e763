"""Backbone ranking on the user's own data, in seconds: each offline backbone's pretrained features for a
stratified sample of the images (the per-machine feature cache makes repeats free), then the cross-validated
accuracy of a linear probe on them (core/analysis/linear.py).

Why a cross-validated linear probe and not LogME: it is an accuracy a person can read ("a probe should reach
about 93%"), it is what `freeze: probe` will actually train, and the advisor uses the same number to decide
whether fine-tuning is worth its time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.analysis.linear import cv_accuracy
from core.config import TrainConfig
from core.data.dataset import Dataset, Sample, labeled_sample
from core.errors import DatasetError
from core.models.backbones import CATALOGUE, OFFLINE
from core.models.features import pretrained_features

MAX_IMAGES = 600  # a stratified sample is enough to rank backbones and to estimate probe accuracy
FOLDS = 5


@dataclass(frozen=True)
class BackboneScore:
    backbone: str
    params_m: float
    input_size: int
    probe_accuracy: float  # cross-validated linear-probe accuracy on the sample
    images: int  # images in the sample
    seconds: float  # time to get the features (near zero when cached)


def sample_for_ranking(ds: Dataset, max_images: int = MAX_IMAGES, seed: int = 0) -> list[Sample]:
    """Up to max_images training images, the same share from every class. Training images only: the advisor
    decides on this sample, and a decision that saw the validation (or test) images would make their accuracy
    an optimistic one."""
    return labeled_sample(ds, max_images, FOLDS, seed, splits=("train",))


def rank_backbones(ds: Dataset, cfg: TrainConfig, backbones: tuple[str, ...] = OFFLINE,
                   progress: Callable[[str, int, int], None] | None = None,
                   should_stop: Callable[[], bool] = lambda: False) -> list[BackboneScore]:
    """Every backbone scored on the same sample, best first (ties within half a point: the smaller first).

    cfg's own backbone is scored with the weights the run will use (bundled, hub, a file, random or a finished
    run's): its probe is the one the run would train. The other candidates are scored with their bundled weights."""
    samples = sample_for_ranking(ds, seed=cfg.seed)
    info = {b.name: b for b in CATALOGUE}
    scores = []
    for name in backbones:
        if should_stop():
            break
        t0 = time.perf_counter()
        weights = cfg.weights if name == cfg.backbone else "bundled"
        feats, failed = pretrained_features(
            cfg.replace(backbone=name, weights=weights, img_size=0), samples, exact=False,
            progress=(lambda d, t, n=name: progress(f"features of {n}", d, t)) if progress else None,
            should_stop=should_stop)
        rows = [(f[0], s.label) for f, s in zip(feats, samples, strict=True) if f is not None]
        if len(rows) < 2 * FOLDS:
            raise DatasetError(f"Only {len(rows)} of {len(samples)} sampled images could be decoded; the dataset "
                               f"needs more readable images to rank backbones ({failed[0].reason if failed else ''}).")
        x, y = np.stack([r[0] for r in rows]), np.array([r[1] for r in rows])
        seconds = time.perf_counter() - t0
        params_m, size = (info[name].params_m, info[name].input_size) if name in info else (0.0, 0)  # any timm name
        scores.append(BackboneScore(name, params_m, size,
                                    cv_accuracy(x, y, len(ds.classes), FOLDS, cfg.seed), len(rows), seconds))
    return sorted(scores, key=lambda s: (-round(s.probe_accuracy * 200), s.params_m))
