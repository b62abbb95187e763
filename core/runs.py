"""Runs on disk: `runs/<run_id>/` with config, metrics, status, summary and weights, written atomically.

A run folder is the durable record of a training; the UI and the CLI list and reload runs from here after a
restart. Nothing in this module knows about training itself.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.files.atomic import atomic_write_json, atomic_write_text

RUN_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
ACTIVE_STATUSES = ("queued", "running")
TERMINAL_STATUSES = ("completed", "stopped", "failed", "interrupted")


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
        return self.path.name

    config = property(lambda self: self.path / "config.yaml")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    status_file = property(lambda self: self.path / "status.json")
    summary_file = property(lambda self: self.path / "summary.json")
    best_weights = property(lambda self: self.path / "best.safetensors")
    last_checkpoint = property(lambda self: self.path / "last.ckpt")
    bundle_dir = property(lambda self: self.path / "bundle")
    dataset_file = property(lambda self: self.path / "dataset.json")

    def write_status(self, status: str, **extra: Any) -> None:
        atomic_write_json(self.status_file, {"status": status, "pid": os.getpid(), "updated": time.time(),
                                             **extra})

    def append_metrics(self, record: dict[str, Any]) -> None:
        # One line per epoch; appended and flushed so a killed run keeps every finished epoch.
        with open(self.metrics, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_status(self) -> dict[str, Any]:
        status = _read_json(self.status_file) or {"status": "unknown"}
        # A run that says it is running but whose process is gone was killed: call it what it is.
        if status.get("status") in ACTIVE_STATUSES and not _pid_alive(status.get("pid")):
            status["status"] = "interrupted"
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

    def read_summary(self) -> dict[str, Any] | None:
        return _read_json(self.summary_file)


def create_run_dir(output_dir: str | Path) -> RunDir:
    run = RunDir(Path(output_dir) / new_run_id())
    run.path.mkdir(parents=True, exist_ok=False)
    return run


def open_run(output_dir: str | Path, run_id: str) -> RunDir:
    if not is_valid_run_id(run_id):
        raise ValueError(f"'{run_id}' is not a run id (expected something like 20261123-140501-a1b2c3).")
    run = RunDir(Path(output_dir) / run_id)
    if not run.path.is_dir():
        raise FileNotFoundError(f"No run {run_id} in {output_dir}.")
    return run


def list_runs(output_dir: str | Path) -> list[RunDir]:
    """All runs under output_dir, newest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    return sorted((RunDir(p) for p in root.iterdir() if p.is_dir() and is_valid_run_id(p.name)),
                  key=lambda r: r.run_id, reverse=True)


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
