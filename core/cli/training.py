"""`python -m core train` and `python -m core distill`: a run (or a distillation's runs) from the flags, with
progress on stderr and the summary on stdout; `--resume` goes on with an interrupted one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.cli.console import print_advice, print_summary, show_progress, training_callbacks
from core.cli.parsers import build_config
from core.config import TrainConfig
from core.errors import ConfigError

if TYPE_CHECKING:
    from core.workflows.auto import Resolved


def cmd_train(args: argparse.Namespace) -> int:
    from core.engine.train import train
    from core.runs import RunDir
    callbacks = training_callbacks(args.quiet)
    if args.resume:
        run = RunDir(Path(args.resume))
        if not run.config.exists():
            raise FileNotFoundError(f"{args.resume} is not a run folder (no config.yaml).")
        result = train(TrainConfig.load(run.config), callbacks, run=run, resume=True)
    else:
        cfg = build_config(args)
        if not cfg.data:
            raise ConfigError("No dataset given: pass --data <folder or .zip> (or --tasks with two or more datasets) "
                              "or set data: in the config file.")
        _check_data_is_first_task(args.data, cfg)
        resolved = resolve_freeze(cfg, args.quiet)
        result = train(resolved.config, callbacks, notes=resolved.notes)
    from core.engine.distributed import is_main_process
    if not is_main_process():  # torchrun: rank 0 reports (and wrote the run folder)
        return 0
    print_summary(result.run_dir, result.summary)
    return 0 if result.status in ("completed", "stopped") else 1


def _check_data_is_first_task(data: str | None, cfg: TrainConfig) -> None:
    """--tasks listing datasets makes data the first of them; a different --data given with it is a mistake."""
    from core.config import task_datasets
    pairs = task_datasets(cfg.tasks) if cfg.tasks else []
    if data and pairs and Path(data).expanduser().resolve() != Path(pairs[0][1]).expanduser().resolve():
        raise ConfigError(f"--data {data} is not the first dataset of --tasks ({pairs[0][1]}): with datasets as "
                          f"tasks, the first of them is the dataset; leave --data out.")


def cmd_distill(args: argparse.Namespace) -> int:
    """Train the distilled student, then (unless --no-baseline) the same student on the labels alone, then the
    side-by-side table; each step is an ordinary run, so --resume picks up at the step a kill interrupted."""
    from core.engine.train import train
    from core.export.compare import to_markdown
    from core.runs import RunDir, Status, create_run_dir
    from core.workflows.distillation import baseline_config, link_baseline, linked_baseline, make_table
    callbacks = training_callbacks(args.quiet)
    if args.resume:
        student = RunDir(Path(args.resume))
        if not student.config.exists():
            raise FileNotFoundError(f"{args.resume} is not a run folder (no config.yaml).")
        cfg = TrainConfig.load(student.config)
        if not cfg.teachers:
            raise ConfigError(f"{args.resume} is not a distilled run (its config names no teachers); resume it "
                              f"with `train --resume`.")
        result = _run_step(train, cfg, callbacks, student)
    else:
        cfg = build_config(args)
        if not cfg.data:
            raise ConfigError("No dataset given: pass --data <folder or .zip> or set data: in the config file.")
        if not cfg.teachers:
            raise ConfigError("No teacher given: pass --teacher <finished run folder or bundle> (repeat it for an "
                              "ensemble).")
        resolved = resolve_freeze(cfg, args.quiet)
        cfg = resolved.config
        student = create_run_dir(cfg.output_dir)
        result = train(cfg, callbacks, run=student, notes=resolved.notes)
    print_summary(result.run_dir, result.summary)
    if result.status != Status.COMPLETED:
        return 0 if result.status == Status.STOPPED else 1
    base = linked_baseline(student)
    if args.baseline or base is not None:
        if base is None:
            base = create_run_dir(cfg.output_dir)
            link_baseline(student, base)
            sys.stderr.write(f"\nlabels-only baseline (same student and settings, no teachers): {base.path}\n")
            result = train(baseline_config(cfg), callbacks, run=base)
        else:
            result = _run_step(train, baseline_config(cfg), callbacks, base)
        print_summary(result.run_dir, result.summary)
        if result.status != Status.COMPLETED:
            return 0 if result.status == Status.STOPPED else 1
    rows = make_table(student, progress=None if args.quiet else show_progress)
    sys.stderr.write("\n")
    print("\n" + to_markdown(rows) + f"table: {student.path / 'distill' / 'table.md'}")
    return 0


def _run_step(train, cfg: TrainConfig, callbacks, run):
    """A run of a distillation on --resume: resumed when interrupted, read back when it already finished."""
    from core.engine.callbacks import FitResult
    from core.runs import Status
    summary = run.read_summary()
    if summary is not None and summary.status == Status.COMPLETED and (run.bundle_dir / "model.safetensors").exists():
        return FitResult(summary.status, str(run.path), summary)
    if not run.config.exists():
        cfg.save(run.config)
    return train(cfg, callbacks, run=run, resume=True)


def resolve_freeze(cfg: TrainConfig, quiet: bool) -> Resolved:
    """`freeze: auto` resolved (core/workflows/auto.py), the advisor's progress and then its reasons on stderr."""
    from core.workflows.auto import resolve_auto
    resolved = resolve_auto(cfg, progress=None if quiet else show_progress)
    if cfg.freeze == "auto":  # the advisor looked at the data and chose; its reasons go with the run
        print_advice(resolved.paragraph, quiet)
    return resolved
