"""What a multi-task dataset is, whichever form its tasks were given in (a labels file: core/data/multitask.py;
a dataset per task: core/data/multitask_datasets.py): tasks, samples with a label per task (MISSING where an image
has none), the dataset type, the stratified split both forms use and their per-task warnings.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from core.data.dataset import MIN_IMAGES_PER_CLASS, Dataset, Sample

MISSING = -1  # the label of an image that has none for a task (cross-entropy's ignore_index)


@dataclass(frozen=True)
class Task:
    name: str
    classes: list[str]


@dataclass(frozen=True)
class MultiSample(Sample):
    """An image with one label per task (MISSING where it has none). `label` is the first task's label."""

    labels: tuple[int, ...] = ()
    # datasets form: the image's path in each task's own dataset ("" where that dataset does not hold it); `path` is
    # the copy in the first dataset that holds it. Empty for the labels-file form (one folder, one path).
    task_paths: tuple[str, ...] = ()


@dataclass
class MultiTaskDataset(Dataset):
    """A Dataset whose samples carry every task's label. `classes` and `counts()` describe the first task (so code
    that shows one task's classes keeps working, and counts still sum to the number of images); `tasks` and
    `task_counts()` describe them all."""

    tasks: list[Task] = field(default_factory=list)
    labels_file: str = ""
    sources: list[str] = field(default_factory=list)  # datasets form: each task's dataset (folder or zip), in order
    task_roots: list[str] = field(default_factory=list)  # datasets form: each task's dataset folder (zips extracted)
    shared: int = 0  # datasets form: images found in more than one dataset (same bytes), one sample each

    def counts(self) -> dict[str, dict[str, int]]:
        first = self.tasks[0]
        out = {}
        for split in ("train", "val", "test"):
            samples = getattr(self, split)
            if split == "test" and not samples:
                continue
            c = Counter(first.classes[s.labels[0]] if s.labels[0] != MISSING else f"(no {first.name} label)"
                        for s in samples)
            out[split] = {name: c.get(name, 0) for name in first.classes} | \
                ({k: v for k, v in c.items() if k not in first.classes})
        return out

    def task_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """task -> split -> class -> labeled images."""
        out = {}
        for t, task in enumerate(self.tasks):
            out[task.name] = {}
            for split in ("train", "val", "test"):
                samples = getattr(self, split)
                if split == "test" and not samples:
                    continue
                c = Counter(s.labels[t] for s in samples if s.labels[t] != MISSING)
                out[task.name][split] = {name: c.get(i, 0) for i, name in enumerate(task.classes)}
        return out

    def summary(self, examples: int = 6) -> dict:
        first = self.tasks[0]
        ex = {c: [s.path for s in self.train if s.labels[0] == i][:examples] for i, c in enumerate(first.classes)}
        return {"root": self.root, "layout": self.layout, "classes": self.classes, "counts": self.counts(),
                "examples": ex, "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
                "warnings": self.warnings, "tasks": {t.name: t.classes for t in self.tasks},
                "task_counts": self.task_counts(), "labels_file": Path(self.labels_file).name,
                "task_sources": {t.name: Path(src).name for t, src in zip(self.tasks, self.sources, strict=True)}
                if self.sources else {},
                "shared_images": self.shared}

    def first_task(self) -> Dataset:
        """The images labeled for the first task, as a plain single-task Dataset (what the advisor looks at)."""
        keep = [[Sample(s.path, s.labels[0]) for s in getattr(self, split) if s.labels[0] != MISSING]
                for split in ("train", "val", "test")]
        return Dataset(self.root, list(self.tasks[0].classes), *keep, list(self.skipped), [], self.layout)


def stratified_split(samples: list[MultiSample], stratum, val_fraction: float, seed: int,
                     ) -> tuple[list[MultiSample], list[MultiSample]]:
    """(train, val): val_fraction of every stratum (at least one image of any stratum of two or more), seeded."""
    rng = random.Random(seed)
    train, val = [], []
    for key in sorted({stratum(s) for s in samples}):
        group = sorted((s for s in samples if stratum(s) == key), key=lambda s: s.path)
        rng.shuffle(group)
        n_val = max(1, round(len(group) * val_fraction)) if len(group) >= 2 else 0
        val += group[:n_val]
        train += group[n_val:]
    return train, val


def task_warnings(ds: MultiTaskDataset) -> list[str]:
    out = []
    for task, splits in ds.task_counts().items():
        for c, n in splits["train"].items():
            if n < MIN_IMAGES_PER_CLASS:
                out.append(f"Task '{task}': class '{c}' has only {n} labeled training image(s); aim for at least "
                           f"{MIN_IMAGES_PER_CLASS} (better 20+).")
        if not sum(splits["val"].values()):
            out.append(f"Task '{task}' has no labeled validation images: its accuracy cannot be measured.")
    return out
