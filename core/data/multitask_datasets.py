"""Multi-task from several labeled datasets, one per task: `tasks: species=/d/antsbees,light=/d/light.zip`.

Each dataset is a folder of class folders (or of train/ val/ test/ folders of class folders) or a zip of one, read
by core.data.dataset.open_dataset as a single-task dataset is (same checks, skipped files, zip extraction). They
become one MultiTaskDataset (core/data/task_samples.py), so training, metrics and export are the labels-file form's.

- Same bytes, same image. Files with identical content (copies or hard links of one photo under two folder trees:
  "a second labeling of the same images") are ONE sample carrying each dataset's label; an image only some datasets
  hold has MISSING for the others. It is decoded and forwarded once and sits in one split for every task, so it
  never trains one task while validating another. A file whose bytes repeat inside one dataset is used once (the
  other copies are listed as skipped). Only files whose size another file shares are read to compare them.
- `data` is the first task's dataset (TrainConfig fills it in), so what reads `data` keeps working: the run's
  dataset name, the advisor (it looks at the first task's images), and paths in the run folder, which are relative
  to the first dataset (an image only a later dataset holds is named by its file name).
- Splits. A dataset with its own val/ folder gives each image it holds that split (test/ too; a dataset with train/
  and test/ but no val/ gives test/ only). An image that several such datasets hold takes the split of the first of
  them in task order, and a warning counts the images whose datasets disagree. Every other image is split here,
  stratified on (its first labeled task, its class there), val_fraction of each stratum, seeded: for datasets
  without split folders that is the labels-file form's split, stratified on the first task.
- Every task needs labeled training and validation images after that; otherwise a DatasetError names the task and
  what to change.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from core.config import TrainConfig
from core.data.dataset import SPLIT_NAMES, Dataset, Skipped, extract_dir_for, open_dataset
from core.data.task_samples import MISSING, MultiSample, MultiTaskDataset, Task, stratified_split, task_warnings
from core.errors import ConfigError, DatasetError
from core.files.digest import file_digest
from core.task_spec import default_task_name

SPLITS = ("train", "val", "test")
# a dataset's own warnings that stay true once the datasets are merged (the rest describe its own split)
KEPT_WARNINGS = ("Class folder '", "has class folders not in train/")


@dataclass
class _Image:
    path: str  # the copy in the first dataset (task order) that holds it
    labels: list[int]  # one per task, MISSING where its dataset does not hold the image
    given: list[str | None]  # the split each dataset's own folders give it (None: no split folders say)
    paths: list[str]  # its path in each dataset ("" where that dataset does not hold it)


def open_task_datasets(cfg: TrainConfig) -> MultiTaskDataset:
    """The datasets cfg.tasks lists as one multi-task dataset; DatasetError naming the task and dataset on bad input."""
    sources = cfg.task_spec.datasets
    cfg.task_spec.weights_for([name for name, _ in sources])  # a weight for a task that is not there: say so first
    opened = [_open(name, src, cfg) for name, src in sources]
    images, repeats = _merge(opened)
    ds, disagree = _split(images, opened, cfg)
    ds.tasks = [Task(name, list(d.classes)) for (name, _), d in zip(sources, opened, strict=True)]
    ds.classes = list(ds.tasks[0].classes)
    ds.sources = [src for _, src in sources]
    ds.task_roots = [d.root for d in opened]  # each task view names its images in its own dataset
    ds.shared = sum(sum(v != MISSING for v in im.labels) > 1 for im in images)
    ds.skipped = [k for d in opened for k in d.skipped] + repeats
    _require_every_task(ds, sources)
    kept = [f"Task '{name}': {w}" for (name, _), d in zip(sources, opened, strict=True) for w in d.warnings
            if any(k in w for k in KEPT_WARNINGS)]
    ds.warnings = kept + task_warnings(ds) + (
        [f"{disagree} image(s) are in datasets whose split folders disagree; each takes the split of the first "
         f"such task in the list, so no image trains one task and validates another."] if disagree else []) + (
        [f"{len(repeats)} file(s) repeat another image of the same dataset byte for byte; each image is used once "
         f"(the copies are listed as skipped)."] if repeats else [])
    return ds


def with_task_dataset(cfg: TrainConfig, path: str | Path, name: str = "", first_name: str = "") -> TrainConfig:
    """cfg with one more task: the dataset at path, named `name` (default: its folder or zip name). The first time,
    cfg.data becomes the first task (named `first_name`, default its folder name). ConfigError when the name is
    taken or not allowed; nothing is opened here (open_multitask does)."""
    pairs = list(cfg.task_spec.datasets)
    if not pairs:
        if not cfg.data:
            raise ConfigError("Choose the first task's dataset above first; then add the others as more tasks.")
        if cfg.task_spec.labels_file:
            raise ConfigError("This run uses a labels file; go back to one task before adding datasets as tasks.")
        pairs = [(first_name.strip() or default_task_name(cfg.data), cfg.data)]
    pairs.append((name.strip() or default_task_name(path), str(path)))
    return cfg.replace(tasks=cfg.task_spec.with_datasets(pairs).text())


def with_first_dataset(cfg: TrainConfig, path: str | Path) -> TrainConfig:
    """cfg with `path` as its dataset; when tasks lists datasets, the first task's dataset changes with it."""
    pairs = cfg.task_spec.datasets
    if not pairs:
        return cfg.replace(data=str(path))
    return cfg.replace(data=str(path), tasks=cfg.task_spec.with_datasets([(pairs[0][0], str(path)), *pairs[1:]]).text())


# ---------------------------------------------------------------------------------------------------------

def _open(name: str, source: str, cfg: TrainConfig) -> Dataset:
    try:
        return open_dataset(source, cfg.val_fraction, cfg.seed, extract_dir=extract_dir_for(cfg.output_dir))
    except DatasetError as exc:
        raise DatasetError(f"Task '{name}' ({source}): {exc}") from None


def _merge(opened: list[Dataset]) -> tuple[list[_Image], list[Skipped]]:
    """One _Image per distinct content, in task order then path order; repeats inside one dataset are skipped."""
    entries = [sorted((s.path, s.label, split) for split in SPLITS for s in getattr(d, split)) for d in opened]
    keys = _content_keys([path for e in entries for path, _, _ in e])
    by_key: dict[str, _Image] = {}
    repeats = []
    for t, (d, rows) in enumerate(zip(opened, entries, strict=True)):
        given, first_here = _given_splits(d), {}
        for path, label, _ in rows:
            key = keys[path]
            if key in first_here:
                repeats.append(Skipped(path, f"same bytes as {Path(first_here[key]).name} in the same dataset; "
                                             f"the image is used once"))
                continue
            first_here[key] = path
            im = by_key.setdefault(key, _Image(path, [MISSING] * len(opened), [None] * len(opened),
                                               [""] * len(opened)))
            im.labels[t], im.given[t], im.paths[t] = label, given.get(path), path
    return list(by_key.values()), repeats


def _content_keys(paths: list[str]) -> dict[str, str]:
    """path -> a key equal for files with equal bytes: their digest, read only when another file has the same size
    (a file of a unique size has no copy); hard links of one file are read once."""
    sizes = {p: os.stat(p) for p in paths}
    shared_size = Counter(st.st_size for st in sizes.values())
    by_inode: dict[tuple[int, int], str] = {}
    out = {}
    for p, st in sizes.items():
        if shared_size[st.st_size] < 2:
            out[p] = f"unique:{p}"
            continue
        inode = (st.st_dev, st.st_ino)
        if inode not in by_inode:
            by_inode[inode] = file_digest(Path(p))
        out[p] = by_inode[inode]
    return out


def _given_splits(d: Dataset) -> dict[str, str]:
    """path -> the split the dataset's own folders give it: every split when it has a val/ folder; else test/ only
    (open_dataset's hold-out from train/ is not the user's choice, and two datasets' hold-outs would disagree)."""
    if d.layout != "splits":
        return {}
    has_val = any(p.is_dir() and SPLIT_NAMES.get(p.name.lower()) == "val" for p in Path(d.root).iterdir())
    return {s.path: split for split in SPLITS for s in getattr(d, split) if has_val or split == "test"}


def _split(images: list[_Image], opened: list[Dataset], cfg: TrainConfig) -> tuple[MultiTaskDataset, int]:
    by: dict[str, list[MultiSample]] = {split: [] for split in SPLITS}
    pending, disagree = [], 0
    for im in images:
        sample = MultiSample(im.path, im.labels[0], tuple(im.labels), tuple(im.paths))
        given = [g for g in im.given if g]
        if given:
            by[given[0]].append(sample)
            disagree += len(set(given)) > 1
        else:
            pending.append(sample)
    train, val = stratified_split(pending, _stratum, cfg.val_fraction, cfg.seed)
    layout = "splits" if any(by.values()) else "folders"
    return MultiTaskDataset(opened[0].root, [], by["train"] + train, by["val"] + val, by["test"],
                            layout=layout), disagree


def _stratum(s: MultiSample) -> tuple[int, int]:
    return next((t, label) for t, label in enumerate(s.labels) if label != MISSING)


def _require_every_task(ds: MultiTaskDataset, sources: list[tuple[str, str]]) -> None:
    counts = ds.task_counts()
    for name, src in sources:
        n = {split: sum(counts[name].get(split, {}).values()) for split in SPLITS}
        if n["val"] and n["train"]:
            continue
        missing, folder = ("validation", "val") if not n["val"] else ("training", "train")
        raise DatasetError(f"Task '{name}' ({src}) has no {missing} images after the split (all {sum(n.values())} of "
                           f"its images are in other splits): add images to it, give it a {folder}/ folder of its "
                           f"own (listed first, if the other datasets' split folders hold the same images), or "
                           f"change val_fraction.")
