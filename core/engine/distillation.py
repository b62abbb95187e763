"""A distillation from start to table, for the CLI (`python -m core distill`) and the Distil page.

The distilled student is an ordinary run whose config names teachers (core/engine/teachers.py does the teaching),
so it resumes, lists, exports and predicts like any run. Its labels-only baseline is a second ordinary run of the
same config without teachers or unlabeled images: the same backbone, freezing, epochs and seed. The student's
folder records which run is its baseline (distill/baseline.json), and the table (core/export/compare.py) is built
from the teachers, the student and that baseline once they have finished.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from core.config import TrainConfig
from core.errors import ConfigError
from core.export.compare import Row, build_table, table_dir, write_table
from core.files.atomic import atomic_write_json
from core.runs import RunDir

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
