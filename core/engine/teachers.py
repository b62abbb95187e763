"""The teachers of a distilled run: finished runs teach a new one (the workflow around it, the labels-only baseline
and the comparison table, is core/engine/distillation.py).

A run with `teachers` in its config trains with the Distill objective (core/models/objectives.py): besides the
labels, each training image's target is the teachers' softened prediction. This module
- loads the teachers (a run folder's bundle, a bundle folder or a bundle zip) and maps their classes onto the
  dataset's by name (a ConfigError names the teacher whose classes differ);
- computes each teacher's logits once per image, on the evaluation view (timm's centre crop at the teacher's
  own size), and caches them per machine like probe features (core/files/cache.py's FeatureCache, keyed by
  the teacher's weights digest and preprocessing, then by image content), so a second run or a resume runs no
  teacher forward pass;
- turns them into soft targets at temperature T: several teachers are an ensemble, their softened probabilities
  averaged (the ensemble's predictive distribution; averaging logits would be a geometric mean that lets one
  over-confident teacher dominate);
- adds the unlabeled images (core/data/unlabeled.py) to the training split, and takes them out again before the
  run's summary, record and duplicate check, which are about labeled data.
The student's augmented views of an image all learn from the teacher's prediction on its evaluation view: one
teacher pass per image for the whole run, whatever the augmentation (the teacher is never run per batch).
The side-by-side table (teachers, student, labels-only baseline) is in core/export/compare.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.config import TrainConfig
from core.data.augment import Preprocessor
from core.data.dataset import Dataset, Sample, extract_dir_for
from core.data.images import decode_images, geometry
from core.data.unlabeled import open_unlabeled
from core.device import halving_on_oom
from core.errors import ConfigError
from core.export.bundle import LoadedModel, load_bundle
from core.files.cache import FeatureCache, cache_root
from core.files.digest import bytes_digest, file_digest

TEACHER_BATCH = 16


@dataclass
class Teacher:
    source: str  # as given in the config
    bundle: Path  # the bundle folder or zip it was loaded from
    model: LoadedModel
    order: list[int]  # the teacher's output column for each of the dataset's classes

    @property
    def name(self) -> str:
        return Path(self.source).name

    @property
    def cache_key(self) -> str:
        weights = self.bundle / "model.safetensors" if self.bundle.is_dir() else self.bundle
        desc = json.dumps([file_digest(weights), self.model.data_cfg], sort_keys=True, default=str)
        return hashlib.blake2b(desc.encode(), digest_size=10).hexdigest()


def bundle_of(source: str) -> Path:
    """The bundle a teacher names: a run folder's bundle/, a bundle folder, or a bundle .zip."""
    p = Path(source).expanduser()
    for candidate in (p / "bundle", p):
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    if p.is_file() and p.suffix.lower() == ".zip":
        return p
    what = "does not exist" if not p.exists() else \
        "is not a finished run folder, a model bundle folder or a bundle .zip"
    raise ConfigError(f"Teacher {p.name}: {p} {what}. Give a run folder that finished training (it holds bundle/), "
                      f"a bundle folder or a bundle zip.")


def load_teachers(cfg: TrainConfig, classes: list[str]) -> list[Teacher]:
    """Every teacher of cfg, its outputs mapped onto `classes` by name."""
    teachers = []
    for source in cfg.teachers:
        bundle = bundle_of(source)
        try:
            model = load_bundle(bundle)
        except (ValueError, OSError, RuntimeError) as exc:
            raise ConfigError(f"Teacher {Path(source).name} could not be loaded: {exc}") from None
        if sorted(model.classes) != sorted(classes):
            missing = sorted(set(classes) - set(model.classes))
            extra = sorted(set(model.classes) - set(classes))
            raise ConfigError(f"Teacher {Path(source).name} was trained on other classes than this dataset's"
                              + (f"; it lacks {', '.join(missing)}" if missing else "")
                              + (f"; it has {', '.join(extra)} that the dataset has not" if extra else "")
                              + ". A teacher must know exactly the dataset's classes (by folder name).")
        model.model.eval()
        teachers.append(Teacher(source, bundle, model, [model.classes.index(c) for c in classes]))
    return teachers


def teacher_logits(teacher: Teacher, samples: list[Sample], device: torch.device,
                   progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] = lambda: False) -> np.ndarray | None:
    """N x classes logits of one teacher (columns in the dataset's class order), from the per-machine cache where
    present; None when stopped. Images that fail to decode get zeros (a uniform target); the engine has dropped
    such images before it asks. On CUDA out-of-memory the teacher's batch is halved (and stays halved)."""
    cache = FeatureCache(cache_root() / "teachers" / f"{teacher.cache_key}.npz")
    hashes = [bytes_digest(Path(x.path).read_bytes()) for x in samples]
    todo = [i for i, h in enumerate(hashes) if cache.get(f"{h}/0") is None]
    model, data_cfg = teacher.model.model.to(device), teacher.model.data_cfg
    pre = Preprocessor(data_cfg, device)
    n, sizes = len(samples), [TEACHER_BATCH]  # the batch size in use last
    if progress:
        progress(n - len(todo), n)
    for start in range(0, len(todo), TEACHER_BATCH * 4):  # decode a few batches at a time, report, check stop
        if should_stop():
            cache.save()
            return None
        part = todo[start:start + TEACHER_BATCH * 4]
        u8, failed = decode_images([samples[i] for i in part], *geometry(data_cfg), exact=True)
        bad = {f.path for f in failed}
        out = halving_on_oom(lambda bs, u8=u8: _logits(model, pre, u8, bs), sizes[-1], sizes.append)
        for i, row in zip(part, out, strict=True):
            if samples[i].path not in bad:
                cache.put(f"{hashes[i]}/0", row)
        if progress:
            progress(n - len(todo) + start + len(part), n)
    cache.save()
    zeros = np.zeros(len(teacher.model.classes), dtype=np.float32)
    rows = np.stack([r if (r := cache.get(f"{h}/0")) is not None else zeros for h in hashes])
    return rows[:, teacher.order]


def _logits(model: torch.nn.Module, pre: Preprocessor, u8: np.ndarray, bs: int) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([model(pre.eval_view(torch.from_numpy(u8[k:k + bs]))).float().cpu()
                          for k in range(0, len(u8), bs)]).numpy()


def soft_targets(teachers: list[Teacher], samples: list[Sample], temperature: float, device: torch.device,
                 progress: Callable[[str, int, int], None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False) -> torch.Tensor | None:
    """N x classes teacher probabilities at `temperature`, averaged over the teachers; None when stopped."""
    probs = []
    for k, t in enumerate(teachers, 1):
        phase = f"teacher predictions ({k} of {len(teachers)}: {t.name})" if len(teachers) > 1 else \
            "teacher predictions"
        logits = teacher_logits(t, samples, device, (lambda d, n, ph=phase: progress(ph, d, n)) if progress else None,
                                should_stop)
        if logits is None:
            return None
        probs.append(torch.from_numpy(logits).div(temperature).softmax(1))
    return torch.stack(probs).mean(0)


def add_unlabeled(cfg: TrainConfig, ds: Dataset) -> int:
    """Append cfg.unlabeled's images to the training split (label -1); returns how many. Files that are not
    usable images are listed with the dataset's skipped files."""
    if not cfg.unlabeled:
        return 0
    if not cfg.teachers:
        raise ConfigError("unlabeled: unlabeled images are learned from a teacher's predictions (give teachers: "
                          "finished runs) or by self-supervised adaptation (set adapt_objective); choose one, or "
                          "leave unlabeled empty.")
    samples, skipped = open_unlabeled(cfg.unlabeled, extract_dir_for(cfg.output_dir))
    known = {x.path for x in ds.train + ds.val + ds.test}
    samples = [x for x in samples if x.path not in known]  # a labeled image given again is labeled
    ds.train += samples
    ds.skipped += skipped
    return len(samples)


def remove_unlabeled(ds: Dataset) -> int:
    """Take the unlabeled images out of the training split again (after training); returns how many."""
    before = len(ds.train)
    ds.train = [x for x in ds.train if x.label >= 0]
    return before - len(ds.train)


def describe(cfg: TrainConfig, unlabeled: int) -> str:
    """The note a distilled run's summary carries."""
    names = ", ".join(Path(t).name for t in cfg.teachers)
    text = (f"Distilled from {len(cfg.teachers)} teacher(s): {names} (alpha {cfg.distill_alpha:g}, "
            f"temperature {cfg.distill_temperature:g}"
            + (", probabilities averaged" if len(cfg.teachers) > 1 else "") + ")")
    if unlabeled:
        text += f"; {unlabeled} unlabeled image(s) from {Path(cfg.unlabeled).name} learned from the teachers alone"
    return text + "."
