"""Multi-task labels: several labelings of one image folder, read from a CSV or JSON labels file (the other form
of `tasks`, several class-folder datasets, is read in core/data/multitask_datasets.py into the same dataset type,
core/data/task_samples.py). `open_multitask` opens either form.

The labels file names each image by its path relative to the data folder, then gives one label per task:

    path,species,orientation             [{"path": "a/1.jpg", "species": "ant", "orientation": "wide"},
    train/ants/1.jpg,ant,wide             {"path": "b/2.jpg", "orientation": "tall"}]
    train/bees/7.jpg,,tall

An empty cell (or a missing key, or null) means "no label for this task": that image trains and is scored only on
the tasks it has labels for. Every problem is reported by line (or JSON entry) and path. The split is stratified
on the first task (images without its label form their own stratum); when every path starts with train/ and val/
(optionally test/) folders, that split is used as given.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from core.config import TrainConfig
from core.data.dataset import (
    SPLIT_NAMES,
    Dataset,
    Skipped,
    check_image,
    descend_single_folder,
    extract_dir_for,
    folder_or_zip,
)
from core.data.multitask_datasets import open_task_datasets
from core.data.task_samples import MISSING, MultiSample, MultiTaskDataset, Task, stratified_split, task_warnings
from core.errors import DatasetError
from core.task_spec import TASK_NAME

MAX_REPORTED = 5  # problems of one kind quoted in a message


# ---------------------------------------------------------------------------------------------------------
# opening

def open_multitask(cfg: TrainConfig) -> MultiTaskDataset:
    """The images of cfg.data with the labels of cfg.tasks, split; DatasetError naming line and path on bad input.
    When cfg.tasks lists datasets instead of a labels file, core/data/multitask_datasets.py reads them."""
    if cfg.task_spec.datasets:
        return open_task_datasets(cfg)
    labels_file = Path(cfg.task_spec.labels_file).expanduser()
    root = _image_root(cfg)
    names, rows = read_labels_file(labels_file)
    images, skipped = _resolve_paths(rows, root, labels_file.name)
    tasks = _tasks(names, [r for r, _ in rows], labels_file.name)
    cfg.task_spec.weights_for([t.name for t in tasks])  # a weight for a task that is not there: say so before training
    index = [{c: i for i, c in enumerate(t.classes)} for t in tasks]
    samples = [MultiSample(str(path), *_encode(cells, index)) for path, cells in images]
    unlabeled = [s for s in samples if all(v == MISSING for v in s.labels)]
    samples = [s for s in samples if any(v != MISSING for v in s.labels)]
    ds = _split(samples, root, cfg.val_fraction, cfg.seed)
    ds.tasks, ds.labels_file, ds.skipped = tasks, str(labels_file), skipped
    ds.classes = list(tasks[0].classes)
    ds.warnings = ([f"{len(unlabeled)} image(s) have no label for any task and are left out."] if unlabeled else []) \
        + task_warnings(ds)
    return ds


def _image_root(cfg: TrainConfig) -> Path:
    if not cfg.data:
        raise DatasetError("No image folder given: multi-task training reads the images of `data` with the labels "
                           "of the labels file.")
    return folder_or_zip(cfg.data, extract_dir_for(cfg.output_dir), missing="Image folder {src} does not exist.",
                         not_zip="{name} is a file but not a .zip. Give the folder (or zip) of the images the "
                                 "labels file names.")


def read_labels_file(path: Path) -> tuple[list[str], list[tuple[dict[str, str], str]]]:
    """(task names, [(row, where)]) where row maps 'path' and each task to its cell ('' = no label) and `where` says
    'line 7' or 'entry 7' for messages."""
    if not path.is_file():
        raise DatasetError(f"Labels file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise DatasetError(f"Labels file {path.name} is neither .csv nor .json.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"Labels file {path.name} could not be read as UTF-8 text ({type(exc).__name__}).") \
            from None
    return _read_csv(text, path.name) if suffix == ".csv" else _read_json(text, path.name)


def _read_csv(text: str, name: str) -> tuple[list[str], list[tuple[dict[str, str], str]]]:
    try:
        lines = list(csv.reader(text.splitlines()))
    except csv.Error as exc:
        raise DatasetError(f"{name} is not valid CSV ({exc}).") from None
    lines = [(i, r) for i, r in enumerate(lines, start=1) if any(c.strip() for c in r)]
    if not lines:
        raise DatasetError(f"{name} is empty: expected a header line `path,task1,task2,...` and one line per image.")
    header = [c.strip() for c in lines[0][1]]
    tasks = _task_names(header[1:], name, "header line")
    rows = []
    for i, r in lines[1:]:
        if len(r) != len(header):
            raise DatasetError(f"{name}, line {i}: {len(r)} cell(s), but the header has {len(header)} "
                               f"({', '.join(header)}). Leave a cell empty for a missing label, keep its comma.")
        rows.append(({"path": r[0].strip(), **{t: c.strip() for t, c in zip(tasks, r[1:], strict=True)}},
                     f"line {i}"))
    return tasks, rows


def _read_json(text: str, name: str) -> tuple[list[str], list[tuple[dict[str, str], str]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{name} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    if isinstance(data, dict):  # {"a/1.jpg": {"species": "ant"}, ...}
        data = [{"path": p, **(v if isinstance(v, dict) else {"": v})} for p, v in data.items()]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise DatasetError(f"{name}: expected a list of objects like {{\"path\": \"a/1.jpg\", \"task1\": \"x\"}}, "
                           f"or an object mapping each path to its labels.")
    tasks: list[str] = []
    for d in data:
        tasks += [k for k in d if k != "path" and k not in tasks]
    tasks = _task_names(tasks, name, "the keys")
    rows = []
    for i, d in enumerate(data, start=1):
        cells = {t: d.get(t) for t in tasks}
        bad = [t for t, v in cells.items() if v is not None and not isinstance(v, (str, int))]
        if bad or not isinstance(d.get("path"), str):
            raise DatasetError(f"{name}, entry {i}: " + (f"the label of '{bad[0]}' is {d[bad[0]]!r}; labels are "
                               f"strings or whole numbers" if bad else "no \"path\" string"))
        rows.append(({"path": d["path"].strip(), **{t: "" if v is None else str(v).strip()
                                                    for t, v in cells.items()}}, f"entry {i}"))
    return tasks, rows


def _task_names(names: list[str], file: str, where: str) -> list[str]:
    if not names:
        raise DatasetError(f"{file}: {where} names no task. Expected `path,task1[,task2,...]`: a path column, then "
                           f"one column per task.")
    bad = [n for n in names if not TASK_NAME.match(n)]
    if bad:
        raise DatasetError(f"{file}: task name '{bad[0]}' in {where} is not allowed: use letters, digits, _ . - "
                           f"(it names the task's exported folder), starting with a letter or digit.")
    dup = [n for n, k in Counter(names).items() if k > 1]
    if dup:
        raise DatasetError(f"{file}: task '{dup[0]}' appears twice in {where}.")
    return names


def _resolve_paths(rows: list[tuple[dict[str, str], str]], root: Path, file: str,
                   ) -> tuple[list[tuple[Path, dict[str, str]]], list[Skipped]]:
    """Every row's image under root (a zip's single top folder is looked into when the paths need it); missing files,
    paths leaving the folder and repeated paths are errors that quote the lines; unreadable images are skipped."""
    if not rows:
        raise DatasetError(f"{file} has a header but no image lines.")
    candidates = [root] + ([inner] if (inner := descend_single_folder(root)) != root else [])
    root = next((r for r in candidates if (r / rows[0][0]["path"]).is_file()), root).resolve()
    problems: dict[str, list[str]] = {"missing": [], "outside": [], "empty": []}
    seen: dict[Path, str] = {}
    out, skipped = [], []
    for row, where in rows:
        rel = row["path"].replace("\\", "/")
        if not rel:
            problems["empty"].append(where)
            continue
        path = (root / rel).resolve()
        if Path(rel).is_absolute() or not path.is_relative_to(root):
            problems["outside"].append(f"{where} ({rel})")
            continue
        if not path.is_file():
            problems["missing"].append(f"{where} ({rel})")
            continue
        if path in seen:
            raise DatasetError(f"{file}: {rel} is listed twice ({seen[path]} and {where}); give each image one line "
                               f"with all its labels.")
        seen[path] = where
        if reason := check_image(path):
            skipped.append(Skipped(str(path), reason))
            continue
        out.append((path, row))
    for kind, text in (("empty", "have no path"), ("outside", "point outside the image folder"),
                       ("missing", f"name files that are not in {root}")):
        if problems[kind]:
            more = len(problems[kind]) - MAX_REPORTED
            raise DatasetError(f"{file}: {len(problems[kind])} line(s) {text}: "
                               + "; ".join(problems[kind][:MAX_REPORTED]) + (f"; and {more} more" if more > 0 else "")
                               + ". Paths are relative to the image folder, e.g. train/ants/1.jpg.")
    if not out:
        raise DatasetError(f"None of the images {file} names is a readable image.")
    return out, skipped


def _tasks(names: list[str], rows: list[dict[str, str]], file: str) -> list[Task]:
    tasks = []
    for name in names:
        classes = sorted({r[name] for r in rows if r[name]})
        if len(classes) < 2:
            have = f"only the class '{classes[0]}'" if classes else "no labels at all"
            raise DatasetError(f"{file}: task '{name}' has {have}; a task needs at least two classes.")
        tasks.append(Task(name, classes))
    return tasks


def _encode(cells: dict[str, str], index: list[dict[str, int]]) -> tuple[int, tuple[int, ...]]:
    labels = tuple(idx[cells[name]] if cells[name] else MISSING for name, idx in
                   zip((n for n in cells if n != "path"), index, strict=True))
    return labels[0], labels


def _split(samples: list[MultiSample], root: Path, val_fraction: float, seed: int) -> MultiTaskDataset:
    """train/ val/ (test/) as given when every path starts with one of them; else stratified on the first task."""
    firsts = {Path(s.path).relative_to(root).parts[0].lower() for s in samples}
    if firsts <= set(SPLIT_NAMES) and {"train", "val"} <= {SPLIT_NAMES[f] for f in firsts}:
        by = {split: [s for s in samples if SPLIT_NAMES[Path(s.path).relative_to(root).parts[0].lower()] == split]
              for split in ("train", "val", "test")}
        return MultiTaskDataset(str(root), [], by["train"], by["val"], by["test"], layout="splits")
    train, val = stratified_split(samples, lambda s: s.labels[0], val_fraction, seed)
    return MultiTaskDataset(str(root), [], train, val, layout="folders")


def single_task_view(cfg: TrainConfig) -> Dataset:
    """What the advisor and the learning-rate finder look at: cfg's class folders, or for a multi-task config the
    images labeled for its first task."""
    from core.data.dataset import open_dataset
    if cfg.task_spec.several:
        return open_multitask(cfg).first_task()
    return open_dataset(cfg.data, cfg.val_fraction, cfg.seed, extract_dir=extract_dir_for(cfg.output_dir))
