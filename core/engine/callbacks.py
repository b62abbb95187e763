"""What the engine reports while it trains: metric records (plain floats) and the Callback hooks.

The hooks run in the training thread, in this order: on_fit_start, (on_phase | on_batch_end)*, on_epoch_end
per epoch, then on_fit_end or on_exception. RunRecorder keeps the run folder current.
"""

from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass

from core.runs import RunDir, RunSummary, Status


@dataclass(frozen=True)
class FitInfo:
    run_id: str
    run_dir: str
    mode: str
    device: str
    classes: list[str]
    counts: dict
    skipped: list[dict]
    warnings: list[str]
    trainable_params: int
    total_params: int
    epochs: int
    steps_per_epoch: int


@dataclass(frozen=True)
class BatchMetrics:
    epoch: int
    step: int
    steps_per_epoch: int
    loss: float
    lr: float
    images_per_sec: float
    elapsed: float
    eta: float


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    images_per_sec: float
    seconds: float
    elapsed: float
    eta: float
    trainable_params: int
    tasks: dict | None = None  # multi-task runs: task -> {"val_loss", "val_acc", "train_acc"}


@dataclass
class FitResult:
    status: Status  # completed | stopped
    run_dir: str
    summary: RunSummary


class Callback:
    """Base class with no-op hooks; override the ones you need. Hooks run in the training thread."""

    def on_fit_start(self, info: FitInfo) -> None: ...
    def on_phase(self, phase: str, done: int, total: int) -> None: ...
    def on_batch_end(self, m: BatchMetrics) -> None: ...
    def on_epoch_end(self, m: EpochMetrics) -> None: ...
    def on_fit_end(self, result: FitResult) -> None: ...
    def on_exception(self, exc: BaseException) -> None: ...


class RunRecorder(Callback):
    """Keeps the run folder current: status.json, metrics.jsonl (one line per epoch). sync_epochs=False: the
    epoch's lines reach the disk without waiting for it (fsync), for a probe's epochs of milliseconds, which a
    resume does not go on from anyway (it trains the head again on the cached features)."""

    def __init__(self, run: RunDir, sync_epochs: bool = True):
        self.run, self.sync = run, sync_epochs

    def on_fit_start(self, info: FitInfo) -> None:
        self.run.write_status(Status.RUNNING, epochs=info.epochs)

    def on_epoch_end(self, m: EpochMetrics) -> None:
        record = asdict(m)
        if record["tasks"] is None:  # single-task runs: the metrics lines stay as they were
            del record["tasks"]
        self.run.append_metrics(record, self.sync)
        self.run.write_status(Status.RUNNING, self.sync, epoch=m.epoch)

    def on_fit_end(self, result: FitResult) -> None:
        self.run.write_status(result.status)

    def on_exception(self, exc: BaseException) -> None:
        self.run.write_status(Status.FAILED, error=str(exc), traceback=traceback.format_exc())
