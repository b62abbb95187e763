"""One task of a multi-task run as a plain single-task dataset: what a task view (<run>/tasks/<task>/, written by
core/engine/task_views.py) was scored on, and what Inspect and the export checks read back.

The view lists its images in task.json by path relative to the image root (the view config's `data`), with the
run's split and that task's labels. Reading it back needs neither the labels file nor the split rule, so a task view
finds exactly the images its multi-task run scored, however the run's tasks were given.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.config import TrainConfig
from core.data.dataset import Dataset, Sample, extract_dir_for, open_dataset
from core.data.task_samples import MISSING, MultiTaskDataset
from core.errors import DatasetError
from core.files.atomic import atomic_write_json

TASK_FILE = "task.json"
SPLITS = ("train", "val", "test")


def task_dataset(ds: MultiTaskDataset, t: int) -> Dataset:
    """Task t's labeled images of every split, as a single-task Dataset (same split and skipped files). Its root is
    the image folder of a labels file, or, when the tasks are datasets, task t's own dataset, each image named by
    its path there (the same photo may sit under another path in the first dataset)."""
    own = bool(ds.task_roots)
    keep = [[Sample(s.task_paths[t] if own else s.path, s.labels[t]) for s in getattr(ds, split)
             if s.labels[t] != MISSING] for split in SPLITS]
    root = ds.task_roots[t] if own else ds.root
    return Dataset(root, list(ds.tasks[t].classes), *keep, list(ds.skipped), [], ds.layout)


def write_task_file(folder: Path, ds: Dataset, task: str, run_id: str) -> None:
    """task.json: the task, its run, classes, layout and every image (path relative to ds.root, label) per split."""
    atomic_write_json(Path(folder) / TASK_FILE, {
        "task": task, "run": run_id, "classes": list(ds.classes), "layout": ds.layout,
        "splits": {split: [[_relative(s.path, ds.root), s.label] for s in getattr(ds, split)] for split in SPLITS}})


def read_task_file(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / TASK_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def open_run_dataset(folder: Path, cfg: TrainConfig) -> Dataset:
    """The dataset a run folder was trained and scored on, with its split: a task view's listed images (under
    cfg.data), or for any other run cfg's class folders opened again. DatasetError when it is gone."""
    listed = read_task_file(folder)
    if listed is None:
        return open_dataset(cfg.data, cfg.val_fraction, cfg.seed, extract_dir=extract_dir_for(cfg.output_dir))
    root = Path(cfg.data)
    if not root.is_dir():
        raise DatasetError(f"Image folder {root} does not exist.")
    splits = {split: [Sample(str(root / rel), int(label)) for rel, label in listed["splits"].get(split, [])]
              for split in SPLITS}
    return Dataset(str(root), list(listed["classes"]), splits["train"], splits["val"], splits["test"],
                   layout=listed.get("layout", "folders"))


def _relative(path: str, root: str) -> str:
    """Relative to root; an image outside it keeps its absolute path (root / absolute is the absolute path), so it is
    found again. task.json stays on the server: bundles and downloads never carry it."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())
