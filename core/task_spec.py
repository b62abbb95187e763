"""The `tasks` and `task_weights` settings of a run, parsed once into a typed value (TrainConfig.task_spec).

In a config file and on the command line `tasks` stays one string, in one of two forms:
- a labels file (.csv or .json) over the images of `data` (core/data/multitask.py reads it);
- two or more labeled datasets, one per task: 'species=/d/antsbees,light=/d/light.zip' (name=path; a bare path is
  named after its folder or zip; core/data/multitask_datasets.py reads them).
`task_weights` is 'species=1,colour=0.5'. `TaskSpec` holds both parsed; everything else reads that, not the strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError

LABELS_FILE_SUFFIXES = (".csv", ".json")  # `tasks` as one labels file; anything else is a list of datasets
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # it names a task folder: tasks/<task>/


@dataclass(frozen=True)
class TaskSpec:
    """One task (nothing set), one labels file, or one dataset per task; and the loss weights given per task."""

    labels_file: str = ""  # the labels-file form: its path as given
    datasets: tuple[tuple[str, str], ...] = ()  # the datasets form: (task name, dataset path), in task order
    weights: tuple[tuple[str, float], ...] = ()  # task_weights as given: (task name, weight)

    @classmethod
    def parse(cls, tasks: str, task_weights: str = "") -> TaskSpec:
        """ValueError whose message starts with the setting it is about ('tasks: ...' or 'task_weights: ...')."""
        try:
            datasets = task_datasets(tasks)
        except ValueError as exc:
            raise ValueError(f"tasks: {exc}") from None
        try:
            weights = parse_task_weights(task_weights)
        except ValueError as exc:
            raise ValueError(f"task_weights: {exc}") from None
        return cls("" if datasets else tasks, tuple(datasets), tuple(weights.items()))

    @property
    def several(self) -> bool:
        """A multi-task run (a labels file or datasets given)."""
        return bool(self.labels_file or self.datasets)

    def text(self) -> str:
        """The `tasks` string of this spec (what the config file holds)."""
        return self.labels_file or ",".join(f"{name}={path}" for name, path in self.datasets)

    def portable(self) -> str:
        """The `tasks` string with every file named, not located (for bundles and downloads)."""
        if self.datasets:
            return ",".join(f"{name}={Path(path).name}" for name, path in self.datasets)
        return Path(self.labels_file).name if self.labels_file else ""

    def with_datasets(self, datasets: list[tuple[str, str]]) -> TaskSpec:
        return TaskSpec("", tuple(datasets), self.weights)

    def describe(self) -> str:
        """One line for captions: 'labels file labels.csv' or 'tasks species, light (a dataset each)'."""
        if self.datasets:
            return f"tasks {', '.join(name for name, _ in self.datasets)} (a dataset each)"
        return f"labels file {Path(self.labels_file).name}"

    def weights_for(self, names: list[str]) -> list[float]:
        """One loss weight per task, in task order, scaled to average 1 (equal weights: all 1); ConfigError when
        task_weights names a task that is not there, or gives every task weight 0."""
        given = dict(self.weights)
        unknown = sorted(set(given) - set(names))
        if unknown:
            of = "one of the tasks" if self.datasets else "a task of the labels file"
            raise ConfigError(f"task_weights names {', '.join(unknown)}, not {of} (its tasks: {', '.join(names)}).")
        raw = [given.get(n, 1.0) for n in names]
        if sum(raw) <= 0:
            raise ConfigError("task_weights gives every task weight 0: at least one task must train.")
        return [w * len(raw) / sum(raw) for w in raw]


def parse_task_weights(text: str) -> dict[str, float]:
    """'species=1,colour=0.5' -> {'species': 1.0, 'colour': 0.5}; ValueError naming the bad part."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, raw = part.partition("=")
        try:
            value = float(raw) if sep and name.strip() else None
        except ValueError:
            value = None
        if value is None or not value >= 0 or value == float("inf"):
            raise ValueError(f"'{part}' is not of the form task=weight with a weight of 0 or more.")
        if name.strip() in out:
            raise ValueError(f"task '{name.strip()}' is given twice.")
        out[name.strip()] = value
    return out


def task_datasets(text: str) -> list[tuple[str, str]]:
    """The datasets form of `tasks`: 'species=/d/ants,/d/light.zip' -> [('species', '/d/ants'), ('light',
    '/d/light.zip')]; [] for a labels file or nothing. ValueError naming the bad entry: a name that is not allowed or
    given twice, a labels file mixed with datasets, a single dataset."""
    entries = [e.strip() for e in text.split(",") if e.strip()]
    pairs = [_task_entry(e) for e in entries]
    files = [p for _, p in pairs if Path(p).suffix.lower() in LABELS_FILE_SUFFIXES]
    if files and len(entries) == 1 and not _named(entries[0]):
        return []  # the labels-file form
    if files and len(entries) == 1:
        raise ValueError(f"{files[0]} is a labels file: its header names the tasks; give its path alone, without "
                         f"'{entries[0].partition('=')[0]}='.")
    if files:
        raise ValueError(f"'{text}' mixes a labels file ({files[0]}) with datasets: give either one labels file or "
                         f"a list of datasets, one per task.")
    for name, path in pairs:
        if not TASK_NAME.match(name):
            raise ValueError(f"task name '{name}' (of {path}) is not allowed: use letters, digits, _ . - starting with "
                             f"a letter or digit (it names the task's exported folder); name it with name=path.")
    names = [n for n, _ in pairs]
    if dup := next((n for n in names if names.count(n) > 1), None):
        raise ValueError(f"task '{dup}' is given twice ({', '.join(p for n, p in pairs if n == dup)}); name the "
                         f"datasets apart with name=path.")
    if len(pairs) == 1:
        raise ValueError(f"only one dataset ({pairs[0][1]}): multi-task needs a labels file (.csv or .json) or two "
                         f"or more datasets; for one task give the dataset as data and leave tasks empty.")
    return pairs


def describe_tasks(tasks: str) -> str:
    """describe() of a `tasks` string that may not parse (a caption: a bad one is shown as a labels file)."""
    try:
        return TaskSpec.parse(tasks).describe()
    except ValueError:
        return TaskSpec(labels_file=tasks).describe()


def default_task_name(path: str | Path) -> str:
    """A dataset's task name when none is given: its folder's name, or its zip's name without .zip."""
    p = Path(str(path).rstrip("/\\"))
    return p.stem if p.suffix.lower() == ".zip" else p.name


def _task_entry(entry: str) -> tuple[str, str]:
    if _named(entry):
        name, _, path = entry.partition("=")
        return name.strip(), path.strip()
    return default_task_name(entry), entry


def _named(entry: str) -> bool:
    name, sep, path = entry.partition("=")
    return bool(sep and name.strip() and path.strip() and not {"/", "\\"} & set(name))
