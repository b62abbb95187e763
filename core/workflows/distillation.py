"""A distillation from start to table, for the CLI (`python -m core distill`) and the Distil page.

The distilled student is an ordinary run whose config names teachers (core/engine/teachers.py does the teaching),
so it resumes, lists, exports and predicts like any run. Its labels-only baseline is a second ordinary run of the
same config without teachers or unlabeled images: the same backbone, freezing, epochs and seed. The student's
folder records which run is its baseline (distill/baseline.json), and the table (core/export/compare.py) is built
from the teachers, the student and that baseline once they have finished.

The steps are always these three, in this order. The CLI runs them one after another (`run_distillation`, which
also resumes an interrupted distillation at its step); the Distil page queues each as a job of the app's job
registry (`queue_distillation`), which runs them one at a time in the same order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import TrainConfig
from core.engine.callbacks import Callback, FitResult
from core.engine.train import train
from core.errors import ConfigError
from core.export.compare import Row, build_table, table_dir, write_table
from core.files.atomic import atomic_write_json
from core.runs import RunDir, Status, create_run_dir

STUDENT, BASELINE, TEACHER = "student (distilled)", "student (labels only)", "teacher"


def baseline_config(cfg: TrainConfig) -> TrainConfig:
    """The same student trained on the labels alone, with the same budget (epochs, early stopping, seed)."""
    name = f"{cfg.run_name} (labels only)" if cfg.run_name else "labels-only baseline"
    return cfg.replace(teachers=(), unlabeled="", run_name=name)


def link_baseline(student: RunDir, baseline: RunDir) -> None:
    table_dir(student).mkdir(exist_ok=True)
    atomic_write_json(table_dir(student) / "baseline.json", {"run_id": baseline.run_id})


def linked_baseline(student: RunDir) -> RunDir | None:
    """The student's labels-only baseline run (a sibling folder), when one was started."""
    path = table_dir(student) / "baseline.json"
    if not path.is_file():
        return None
    return RunDir(student.path.parent / json.loads(path.read_text(encoding="utf-8"))["run_id"])


def make_table(student: RunDir, progress: Callable[[str, int, int], None] | None = None) -> list[Row]:
    """Build and write the table of a finished distilled run (teachers, student, and its baseline if linked)."""
    cfg = TrainConfig.load(student.config)
    if not cfg.teachers:
        raise ConfigError(f"Run {student.run_id} was not distilled (its config names no teachers).")
    rows_in: list[tuple[str, str | Path]] = [(TEACHER, t) for t in cfg.teachers]
    rows_in.append((STUDENT, student.path))
    base = linked_baseline(student)
    if base is not None:
        rows_in.append((BASELINE, base.path))
    for role, source in rows_in[len(cfg.teachers):]:
        if not (Path(source) / "bundle" / "model.safetensors").is_file():
            raise ConfigError(f"The {role} run {Path(source).name} has no model yet (it did not finish training); "
                              f"resume or finish it first.")
    rows = build_table(rows_in, progress)
    write_table(student, rows)
    return rows


def check_request(cfg: TrainConfig) -> None:
    """A new distillation needs a dataset and at least one teacher."""
    if not cfg.data:
        raise ConfigError("No dataset given: pass --data <folder or .zip> or set data: in the config file.")
    if not cfg.teachers:
        raise ConfigError("No teacher given: pass --teacher <finished run folder or bundle> (repeat it for an "
                          "ensemble).")


def open_student(path: str | Path) -> tuple[RunDir, TrainConfig]:
    """The student run of an interrupted distillation, and its config, to resume it."""
    student = RunDir(Path(path))
    if not student.config.exists():
        raise FileNotFoundError(f"{path} is not a run folder (no config.yaml).")
    cfg = TrainConfig.load(student.config)
    if not cfg.teachers:
        raise ConfigError(f"{path} is not a distilled run (its config names no teachers); resume it with "
                          f"`train --resume`.")
    return student, cfg


@dataclass(frozen=True)
class Distilled:
    student: RunDir
    status: Status  # COMPLETED once the table is built; else the status of the run that did not complete
    rows: list[Row] | None = None  # the table


def run_distillation(cfg: TrainConfig, callbacks: Sequence[Callback] = (), *, student: RunDir | None = None,
                     baseline: bool = True, notes: Sequence[str] = (),
                     on_run_end: Callable[[FitResult], None] = lambda result: None,
                     on_baseline_start: Callable[[RunDir], None] = lambda run: None,
                     progress: Callable[[str, int, int], None] | None = None) -> Distilled:
    """The student (a new run of cfg, a concrete config, with notes; or `student`, resumed), then its baseline
    (with `baseline`, or when one is linked already), then the table; it stops after a run that did not complete.

    A resumed run is resumed when interrupted and read back when it finished. on_run_end gets each run's result,
    on_baseline_start a new baseline's folder before it trains; progress reports the table's measurements."""
    if student is None:
        student = create_run_dir(cfg.output_dir)
        result = train(cfg, callbacks, run=student, notes=notes)
    else:
        result = _resume_or_read(cfg, callbacks, student)
    on_run_end(result)
    if result.status != Status.COMPLETED:
        return Distilled(student, result.status)
    base = linked_baseline(student)
    if baseline or base is not None:
        if base is None:
            base = create_run_dir(cfg.output_dir)
            link_baseline(student, base)
            on_baseline_start(base)
            result = train(baseline_config(cfg), callbacks, run=base)
        else:
            result = _resume_or_read(baseline_config(cfg), callbacks, base)
        on_run_end(result)
        if result.status != Status.COMPLETED:
            return Distilled(student, result.status)
    return Distilled(student, Status.COMPLETED, make_table(student, progress))


def _resume_or_read(cfg: TrainConfig, callbacks: Sequence[Callback], run: RunDir) -> FitResult:
    """A run of a resumed distillation: resumed when interrupted, read back when it already finished."""
    summary = run.read_summary()
    if summary is not None and summary.status == Status.COMPLETED and (run.bundle_dir / "model.safetensors").exists():
        return FitResult(summary.status, str(run.path), summary)
    if not run.config.exists():
        cfg.save(run.config)
    return train(cfg, callbacks, run=run, resume=True)


def queue_distillation(registry: Any, cfg: TrainConfig, baseline: bool) -> dict[str, str]:
    """The Distil page's way: the student, its baseline (with `baseline`) and the table queued as three jobs of
    `registry` (a core.jobs.JobRegistry, passed in: jobs sits above this unit), which runs them one at a time in
    this order and resolves `freeze: auto` in each training job. Returns each step's job id by role."""
    student = registry.submit(cfg)
    jobs = {"student": student.job_id}
    if baseline:
        base = registry.submit(baseline_config(cfg))
        link_baseline(student.run, base.run)
        jobs["baseline"] = base.job_id
    jobs["table"] = queue_table(registry, student.run).job_id
    return jobs


def queue_table(registry: Any, student: RunDir) -> Any:
    """A job of `registry` that builds the table of a distilled run whose runs have finished."""
    return registry.submit_task("distill-table", f"distillation table of {student.run_id}",
                                lambda job: make_table(student, progress=job.on_phase))
