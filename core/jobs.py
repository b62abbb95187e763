"""Background training jobs: one daemon worker per registry runs queued trainings one at a time.

The web UI keeps one `JobRegistry` per server process and polls `job.snapshot()`, a frozen copy taken under
the job's lock, so any number of readers (tabs, sessions, reruns) see consistent state and can never change
it. The worker never touches UI code; every failure is recorded with its traceback, never swallowed.
"""

from __future__ import annotations

import collections
import threading
import time
import traceback
from dataclasses import dataclass

from core.config import TrainConfig
from core.engine.callbacks import BatchMetrics, Callback, EpochMetrics, FitInfo, FitResult
from core.engine.train import train
from core.runs import RunDir, create_run_dir

ACTIVE = ("queued", "running")
MAX_BATCH_POINTS = 2000


@dataclass(frozen=True)
class JobSnapshot:
    job_id: str
    status: str  # queued | running | completed | stopped | failed
    run_dir: str
    config: TrainConfig
    phase: str = ""
    phase_done: int = 0
    phase_total: int = 0
    info: FitInfo | None = None
    epochs: tuple[EpochMetrics, ...] = ()
    batches: tuple[BatchMetrics, ...] = ()
    last_batch: BatchMetrics | None = None
    summary: dict | None = None
    error: str | None = None
    traceback: str | None = None
    queue_position: int = 0
    created: float = 0.0

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def progress(self) -> float:
        """0..1 over all epochs (batch-level while training)."""
        if self.status in ("completed",):
            return 1.0
        b = self.last_batch
        if b is None or not self.info:
            return 0.0
        return min(1.0, ((b.epoch - 1) * b.steps_per_epoch + b.step) / (self.info.epochs * b.steps_per_epoch))


class Job(Callback):
    """One training request; also the callback that records the engine's progress into its state."""

    def __init__(self, cfg: TrainConfig, run: RunDir, resume: bool = False):
        self.cfg, self.run, self.resume = cfg, run, resume
        self.job_id = run.run_id
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._status = "queued"
        self._phase: tuple[str, int, int] = ("waiting for the device", 0, 0)
        self._info: FitInfo | None = None
        self._epochs: list[EpochMetrics] = []
        self._batches: list[BatchMetrics] = []
        self._summary: dict | None = None
        self._error: tuple[str, str] | None = None
        self.created = time.time()
        self.finished = threading.Event()
        run.write_status("queued")

    # -- engine callbacks (worker thread) --------------------------------------------------------------
    def on_fit_start(self, info: FitInfo) -> None:
        with self._lock:
            self._info, self._phase = info, ("training", 0, info.epochs)

    def on_phase(self, phase: str, done: int, total: int) -> None:
        with self._lock:
            self._phase = (phase, done, total)

    def on_batch_end(self, m: BatchMetrics) -> None:
        with self._lock:
            self._batches.append(m)
            if len(self._batches) > MAX_BATCH_POINTS:  # thin old points; epochs are kept in full
                self._batches = self._batches[::2]

    def on_epoch_end(self, m: EpochMetrics) -> None:
        with self._lock:
            self._epochs.append(m)
            self._phase = ("training", m.epoch, self.cfg.epochs)

    # -- control ---------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self.stop_event.set()

    def snapshot(self, queue_position: int = 0) -> JobSnapshot:
        with self._lock:
            err = self._error
            return JobSnapshot(self.job_id, self._status, str(self.run.path), self.cfg, *self._phase,
                               info=self._info, epochs=tuple(self._epochs), batches=tuple(self._batches),
                               last_batch=self._batches[-1] if self._batches else None, summary=self._summary,
                               error=err[0] if err else None, traceback=err[1] if err else None,
                               queue_position=queue_position, created=self.created)

    def _set(self, **kw) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, f"_{k}", v)

    def execute(self) -> None:
        """Run the training in the calling (worker) thread; never raises."""
        if self.stop_event.is_set():  # stopped while still queued
            self._set(status="stopped")
            self.run.write_status("stopped")
            self.finished.set()
            return
        self._set(status="running")
        try:
            result: FitResult = train(self.cfg, [self], stop=self.stop_event, run=self.run, resume=self.resume)
            self._set(status=result.status, summary=result.summary)
        except BaseException as exc:  # recorded for the UI; the run folder's status.json says failed too
            self._set(status="failed", error=(_one_line(exc), traceback.format_exc()))
        finally:
            self.finished.set()


class JobRegistry:
    """Owns the jobs of one process and the worker thread that runs them in order."""

    def __init__(self, output_dir: str = "runs"):
        self.output_dir = output_dir
        self._jobs: dict[str, Job] = {}
        self._queue: collections.deque[Job] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None

    def submit(self, cfg: TrainConfig) -> Job:
        """Queue a training; it starts when the device is free. Returns at once."""
        cfg.validate()
        return self._enqueue(Job(cfg, create_run_dir(cfg.output_dir)))

    def resume(self, run: RunDir) -> Job:
        """Queue an interrupted run to go on from its last finished epoch, in the same run folder."""
        return self._enqueue(Job(TrainConfig.load(run.config), run, resume=True))

    def _enqueue(self, job: Job) -> Job:
        with self._lock:
            self._jobs[job.job_id] = job
            self._queue.append(job)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="transferlab-trainer", daemon=True)
                self._worker.start()
            self._wake.notify()
        return job

    def get(self, job_id: str | None) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id or "")

    def snapshot(self, job_id: str) -> JobSnapshot | None:
        job = self.get(job_id)
        if job is None:
            return None
        with self._lock:
            pos = next((i + 1 for i, j in enumerate(self._queue) if j is job), 0)
        return job.snapshot(queue_position=pos)

    def jobs(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def active_job(self) -> Job | None:
        """The job that holds the device or is about to (the oldest queued/running one), if any."""
        with self._lock:
            return self._queue[0] if self._queue else None

    def stop(self, job_id: str) -> bool:
        job = self.get(job_id)
        if job is None:
            return False
        job.request_stop()
        return True

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._wake.wait()
                job = self._queue[0]
            job.execute()
            with self._lock:
                self._queue.popleft()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, (ValueError, RuntimeError, OSError)) else f"{type(exc).__name__}: {text}"
