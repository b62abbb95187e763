"""Runs on disk: `runs/<run_id>/` with config, metrics, status, summary and weights, written atomically; and the
typed records read from them: `Status` (the one status vocabulary of runs and jobs) and `RunSummary`.

A run folder is the durable record of a training; the UI and the CLI list and reload runs from here after a
restart. Nothing in this module knows about training itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from core.files.atomic import atomic_write_json, atomic_write_text

RUN_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
TASKS_DIR = "tasks"  # a multi-task run's task views: <run>/tasks/<task>/, each shaped like a run folder


class Status(StrEnum):
    """Where a run or a job is. A StrEnum: equal to its plain string, so JSON files and old runs read the same."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"  # by the user, or early stopping's decision; the best weights so far are kept
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # its process died (a kill, a crash, a restart); training can resume
    UNKNOWN = "unknown"

    @property
    def active(self) -> bool:
        return self in (Status.QUEUED, Status.RUNNING)


@dataclass(frozen=True)
class SplitReport:
    """Metrics of one evaluated split (validation or test), as core.analysis.metrics computes them."""

    accuracy: float
    macro_f1: float
    macro_precision: float
    macro_recall: float
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    num: int
    balanced_accuracy: float | None = None  # mean per-class recall (older summaries: their macro_recall, the same)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitReport:
        values = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        values.setdefault("balanced_accuracy", d.get("macro_recall"))  # the same figure, under its older name
        return cls(**values)


@dataclass(frozen=True)
class RunSummary:
    """summary.json: what a finished (or stopped) run achieved. Per-image outputs live in predictions.npz.

    Paths are relative to the dataset root and the dataset is named, never located: a summary travels in the
    exported bundle and must not reveal where the server keeps data."""

    status: Status
    backbone: str = ""
    freeze: str = ""
    dataset: str = ""  # the dataset's folder (or zip) name
    classes: list[str] = field(default_factory=list)
    val: SplitReport | None = None
    test: SplitReport | None = None  # when the dataset has a test/ split: the best weights evaluated on it
    best_epoch: int | None = None
    epochs_run: int = 0
    train_seconds: float = 0.0
    num_train: int = 0
    skipped: list[str] = field(default_factory=list)  # relative paths of files left out
    device: str = ""
    batch_size: int = 0
    notes: list[str] = field(default_factory=list)  # what happened on the way (batch halved, ...)
    note: str = ""  # why there are no results, when there are none
    calibration: dict | None = None  # temperature + validation ECE/NLL before and after (analysis.calibration)
    leakage: dict | None = None  # duplicates across splits found at the end of the run (data.duplicates)
    lineage: list[str] = field(default_factory=list)  # where its weights came from, oldest first, ending with it
    adaptation: dict | None = None  # a self-supervised adaptation run (engine.adapt): objective, probe before/after
    # multi-task runs (core/engine/multitask.py): task -> {"classes", "weight", "val", "test"} (SplitReport dicts);
    # classes/val/test above are then the first task's
    tasks: dict | None = None
    # the unknown-input score (core/analysis/unknown.py): method, threshold, accept, k, val_flagged; or a note
    unknown: dict | None = None

    @property
    def val_accuracy(self) -> float | None:
        return self.val.accuracy if self.val else None

    @property
    def has_results(self) -> bool:
        return self.val is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSummary:
        d = dict(d)
        if "val_accuracy" in d and "val" not in d:  # the flat layout of runs made before 2026-11-24
            d["val"] = {"accuracy": d["val_accuracy"], "num": d.get("num_val", 0),
                        **{k: d[k] for k in ("macro_f1", "macro_precision", "macro_recall", "per_class",
                                             "confusion_matrix")}}
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}  # newer keys are ignored, not fatal
        values["status"] = Status(values.get("status", "unknown"))
        for split in ("val", "test"):
            if values.get(split) is not None:
                values[split] = SplitReport.from_dict(values[split])
        return cls(**values)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def is_valid_run_id(run_id: str) -> bool:
    """Run ids come back from URLs; only this exact shape may ever become a path."""
    return bool(RUN_ID_RE.match(run_id or ""))


@dataclass
class RunDir:
    """Paths and small read/write helpers of one run folder."""

    path: Path

    @property
    def run_id(self) -> str:
        """The run's id; for a task view `<run id>-<task>` (the name its downloads carry)."""
        return f"{self.path.parent.parent.name}-{self.path.name}" if self.task else self.path.name

    @property
    def task(self) -> str | None:
        """The task's name when this folder is a task view of a multi-task run (<run>/tasks/<task>/), else None."""
        p = self.path
        return p.name if p.parent.name == TASKS_DIR and is_valid_run_id(p.parent.parent.name) else None

    @property
    def parent_run(self) -> RunDir | None:
        """The multi-task run a task view belongs to; None for other runs."""
        return RunDir(self.path.parent.parent) if self.task else None

    def task_views(self) -> list[RunDir]:
        """A multi-task run's task views, in the run's task order (the views written so far; [] for other runs)."""
        folder = self.path / TASKS_DIR
        if self.task or not folder.is_dir():
            return []
        order = list((self.read_summary() or RunSummary(Status.UNKNOWN)).tasks or {})
        views = [RunDir(p) for p in folder.iterdir() if (p / "status.json").is_file()]  # written last: complete
        return sorted(views, key=lambda v: (order.index(v.path.name) if v.path.name in order else len(order),
                                            v.path.name))

    def task_view(self, task: str) -> RunDir:
        """One task view by name; FileNotFoundError naming the tasks there are."""
        views = {v.path.name: v for v in self.task_views()}
        if task not in views:
            have = f"its tasks: {', '.join(views)}" if views else ("it has no task folders: not a finished multi-task "
                                                                   "run, or one made before they existed")
            raise FileNotFoundError(f"Run {self.run_id} has no task '{task}' ({have}).")
        return views[task]

    config = property(lambda self: self.path / "config.yaml")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    status_file = property(lambda self: self.path / "status.json")
    summary_file = property(lambda self: self.path / "summary.json")
    best_weights = property(lambda self: self.path / "best.safetensors")
    last_checkpoint = property(lambda self: self.path / "last.ckpt")
    bundle_dir = property(lambda self: self.path / "bundle")
    dataset_file = property(lambda self: self.path / "dataset.json")

    predictions = property(lambda self: self.path / "predictions.npz")

    def write_status(self, status: Status, sync: bool = True, **extra: Any) -> None:
        atomic_write_json(self.status_file, {"status": str(status), "pid": os.getpid(), "updated": time.time(),
                                             **extra}, sync)

    def append_metrics(self, record: dict[str, Any], sync: bool = True) -> None:
        # One line per epoch; appended and flushed so a killed run keeps every finished epoch (sync: on disk even
        # if the machine goes down)
        with open(self.metrics, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            if sync:
                os.fsync(fh.fileno())

    def read_status(self) -> dict[str, Any]:
        """status.json, with `status` as a Status."""
        status = _read_json(self.status_file) or {}
        status["status"] = Status(status.get("status", "unknown"))
        # A run that says it is running but whose process is gone was killed: call it what it is.
        if status["status"].active and not _pid_alive(status.get("pid")):
            status["status"] = Status.INTERRUPTED
        return status

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        rows = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill mid-write
                break
        return rows

    def keep_metrics(self, last_epoch: int) -> None:
        """Drop metric lines after last_epoch (a resumed run redoes those epochs)."""
        rows = [r for r in self.read_metrics() if r.get("epoch", 0) <= last_epoch]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in rows))

    def read_summary(self) -> RunSummary | None:
        data = _read_json(self.summary_file)
        return RunSummary.from_dict(data) if data is not None else None

    def write_summary(self, summary: RunSummary) -> None:
        atomic_write_json(self.summary_file, summary.to_dict())


def create_run_dir(output_dir: str | Path) -> RunDir:
    run = RunDir(Path(output_dir) / new_run_id())
    run.path.mkdir(parents=True, exist_ok=False)
    return run


def list_runs(output_dir: str | Path, task_views: bool = False) -> list[RunDir]:
    """All runs under output_dir, newest first; with task_views, each multi-task run followed by its task views."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    runs = sorted((RunDir(p) for p in root.iterdir() if p.is_dir() and is_valid_run_id(p.name)),
                  key=lambda r: r.run_id, reverse=True)
    return [v for r in runs for v in (r, *r.task_views())] if task_views else runs


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
