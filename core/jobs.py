"""Background jobs: one daemon worker per registry runs queued long tasks one at a time.

A task is any function of its Job: a training (`JobRegistry.submit`), or ranking backbones, an LR range test,
self-supervised adaptation, an export with a parity check (`JobRegistry.submit_task`). Tasks report through the
Job's hooks (on_phase for "3 of 40 done", the training hooks for curves) and check `job.stop_event`. The web UI
keeps one `JobRegistry` per server process and polls `job.snapshot()`, a frozen copy taken under the job's lock,
so any number of readers (tabs, sessions, reruns) see consistent state and can never change it. The worker never
touches UI code; every failure is recorded with its traceback, never swallowed.
"""

from __future__ import annotations

import ast
import collections
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.config import TrainConfig
from core.engine.callbacks import BatchMetrics, Callback, EpochMetrics, FitInfo
from core.models import init_from
from core.runs import RunDir, RunSummary, Status, create_run_dir, new_run_id
from core.workflows.auto import resolve_auto, train_resolved

MAX_BATCH_POINTS = 2000
TRAIN = "train"


def _parse_one_at_a_time() -> None:
    """CPython 3.11 keeps ast.parse's recursion counter in state that threads share: two threads parsing at once fail
    with "SystemError: AST constructor recursion depth mismatch" (seen here on 3.11.7: a job's np.load reads each
    .npy header with ast.literal_eval while Streamlit parses a page; python/cpython#106905 and kin). Where jobs run
    beside pages, every ast.parse (literal_eval's too: it calls the module's `parse`) takes one lock. Reentrant: a
    parse that triggers a finaliser which parses again in the same thread must not deadlock."""
    if getattr(ast.parse, "one_at_a_time", False):
        return
    lock, parse = threading.RLock(), ast.parse

    def locked_parse(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return parse(*args, **kwargs)
    locked_parse.one_at_a_time, locked_parse.lock = True, lock  # type: ignore[attr-defined]
    ast.parse = locked_parse


_parse_one_at_a_time()


@dataclass(frozen=True)
class JobSnapshot:
    job_id: str
    status: Status
    kind: str  # "train", or the name of another long task
    title: str
    run_dir: str = ""  # training jobs: their run folder
    config: TrainConfig | None = None  # training jobs
    phase: str = ""
    phase_done: int = 0
    phase_total: int = 0
    info: FitInfo | None = None
    epochs: tuple[EpochMetrics, ...] = ()
    batches: tuple[BatchMetrics, ...] = ()
    last_batch: BatchMetrics | None = None
    summary: RunSummary | None = None  # training jobs, once finished
    result: Any = None  # other tasks: what the task returned
    error: str | None = None
    traceback: str | None = None
    queue_position: int = 0
    created: float = 0.0

    @property
    def active(self) -> bool:
        return self.status.active

    @property
    def progress(self) -> float:
        """0..1: over all epochs (batch-level) while training; over the current phase for other tasks."""
        if self.status == Status.COMPLETED:
            return 1.0
        b = self.last_batch
        if b is None or not self.info:
            return min(1.0, self.phase_done / self.phase_total) if self.phase_total else 0.0
        return min(1.0, ((b.epoch - 1) * b.steps_per_epoch + b.step) / (self.info.epochs * b.steps_per_epoch))


class Job(Callback):
    """One queued long task, and the callback through which it reports; its state is read by snapshot()."""

    def __init__(self, kind: str, title: str, task: Callable[[Job], Any], job_id: str | None = None,
                 cfg: TrainConfig | None = None, run: RunDir | None = None):
        self.kind, self.title, self.task = kind, title, task
        self.cfg, self.run = cfg, run
        self.job_id = job_id or (run.run_id if run else new_run_id())
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._status = Status.QUEUED
        self._phase: tuple[str, int, int] = ("waiting for the device", 0, 0)
        self._info: FitInfo | None = None
        self._epochs: list[EpochMetrics] = []
        self._batches: list[BatchMetrics] = []
        self._summary: RunSummary | None = None
        self._result: Any = None
        self._error: tuple[str, str] | None = None
        self.created = time.time()
        self.finished = threading.Event()
        if run:
            run.write_status(Status.QUEUED)

    # -- hooks (worker thread) -------------------------------------------------------------------------
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
            self._phase = ("training", m.epoch, self._info.epochs if self._info else m.epoch)

    # -- control ---------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self.stop_event.set()

    def snapshot(self, queue_position: int = 0) -> JobSnapshot:
        with self._lock:
            err = self._error
            return JobSnapshot(self.job_id, self._status, self.kind, self.title,
                               str(self.run.path) if self.run else "", self.cfg, *self._phase, info=self._info,
                               epochs=tuple(self._epochs), batches=tuple(self._batches),
                               last_batch=self._batches[-1] if self._batches else None, summary=self._summary,
                               result=self._result, error=err[0] if err else None,
                               traceback=err[1] if err else None, queue_position=queue_position,
                               created=self.created)

    def _set(self, **kw) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, f"_{k}", v)

    def execute(self) -> None:
        """Run the task in the calling (worker) thread; never raises."""
        if self.stop_event.is_set():  # stopped while still queued
            self._set(status=Status.STOPPED)
            if self.run:
                self.run.write_status(Status.STOPPED)
            self.finished.set()
            return
        self._set(status=Status.RUNNING)
        try:
            result = self.task(self)
            if self.kind == TRAIN:
                self._set(status=result.status, summary=result.summary)
            else:
                self._set(status=Status.STOPPED if self.stop_event.is_set() else Status.COMPLETED, result=result)
        except BaseException as exc:  # recorded for the UI; a run folder's status.json says failed too
            self._set(status=Status.FAILED, error=(_one_line(exc), traceback.format_exc()))
        finally:
            self.finished.set()


class JobRegistry:
    """Owns the jobs of one process and the worker thread that runs them in order.

    `guard`, when given, checks every training config before it is queued (submit and resume) and raises with a
    sentence when it must not run: the web app passes its workspace policy (allowed data roots), so every route
    to a run (any page, an uploaded config, a `?run=` link) goes through the same check."""

    def __init__(self, output_dir: str = "runs", guard: Callable[[TrainConfig], None] | None = None):
        self.output_dir = output_dir
        self.guard = guard
        self._jobs: dict[str, Job] = {}
        self._queue: collections.deque[Job] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None

    def submit(self, cfg: TrainConfig) -> Job:
        """Queue a training; it starts when the device is free. Returns at once."""
        cfg.validate()
        if self.guard:
            self.guard(cfg)
        cfg = init_from.resolve(cfg)  # a bad starting run is a sentence now, not a failed job later
        return self._enqueue(_training_job(cfg, create_run_dir(cfg.output_dir)))

    def resume(self, run: RunDir) -> Job:
        """Queue an interrupted run to go on from its last finished epoch, in the same run folder."""
        cfg = TrainConfig.load(run.config)
        if self.guard:
            self.guard(cfg)
        return self._enqueue(_training_job(cfg, run, resume=True))

    def submit_task(self, kind: str, title: str, task: Callable[[Job], Any]) -> Job:
        """Queue any long task: `task(job)` runs in the worker, reports with job.on_phase(...), checks
        job.stop_event, and returns its result (snapshot().result)."""
        return self._enqueue(Job(kind, title, task))

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


def _training_job(cfg: TrainConfig, run: RunDir, resume: bool = False) -> Job:
    title = f"{cfg.freeze} {cfg.backbone} on {cfg.portable().data or 'no data'}"

    def task(job: Job) -> Any:
        if cfg.freeze == "auto":  # look at the data first, in the worker: it takes seconds to a minute
            job.on_phase("looking at the data", 0, 0)
        resolved = resolve_auto(cfg, progress=job.on_phase, should_stop=job.stop_event.is_set)
        job.cfg = resolved.config
        return train_resolved(resolved, [job], stop=job.stop_event, run=run, resume=resume, progress=job.on_phase)
    return Job(TRAIN, title, task, cfg=cfg, run=run)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, (ValueError, RuntimeError, OSError)) else f"{type(exc).__name__}: {text}"
