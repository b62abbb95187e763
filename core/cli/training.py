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
        from core.workflows.auto import train_resolved
        result = train_resolved(resolved, callbacks, progress=None if args.quiet else show_progress)
    from core.engine.distributed import is_main_process
    if not is_main_process():  # torchrun: rank 0 reports (and wrote the run folder)
        return 0
    print_summary(result.run_dir, result.summary)
    return 0 if result.status in ("completed", "stopped") else 1


def _check_data_is_first_task(data: str | None, cfg: TrainConfig) -> None:
    """--tasks listing datasets makes data the first of them; a different --data given with it is a mistake."""
    pairs = cfg.task_spec.datasets
    if data and pairs and Path(data).expanduser().resolve() != Path(pairs[0][1]).expanduser().resolve():
        raise ConfigError(f"--data {data} is not the first dataset of --tasks ({pairs[0][1]}): with datasets as "
                          f"tasks, the first of them is the dataset; leave --data out.")


def cmd_distill(args: argparse.Namespace) -> int:
    """Train the distilled student, then (unless --no-baseline) the same student on the labels alone, then the
    side-by-side table (core/workflows/distillation.py); each step is an ordinary run, so --resume picks up at the
    step a kill interrupted."""
    from core.export.compare import to_markdown
    from core.runs import Status
    from core.workflows.distillation import check_request, open_student, run_distillation
    if args.resume:
        student, cfg = open_student(args.resume)
        notes: list[str] = []
    else:
        student, cfg = None, build_config(args)
        check_request(cfg)
        resolved = resolve_freeze(cfg, args.quiet)
        cfg, notes = resolved.config, resolved.notes
    done = run_distillation(cfg, training_callbacks(args.quiet), student=student, baseline=args.baseline,
                            notes=notes, on_run_end=lambda result: print_summary(result.run_dir, result.summary),
                            on_baseline_start=_announce_baseline, progress=None if args.quiet else show_progress)
    if done.rows is None:
        return 0 if done.status == Status.STOPPED else 1
    sys.stderr.write("\n")
    print("\n" + to_markdown(done.rows) + f"table: {done.student.path / 'distill' / 'table.md'}")
    return 0


def _announce_baseline(run) -> None:
    sys.stderr.write(f"\nlabels-only baseline (same student and settings, no teachers): {run.path}\n")


def resolve_freeze(cfg: TrainConfig, quiet: bool) -> Resolved:
    """`freeze: auto` resolved (core/workflows/auto.py), the advisor's progress and then its reasons on stderr."""
    from core.workflows.auto import resolve_auto
    resolved = resolve_auto(cfg, progress=None if quiet else show_progress)
    if cfg.freeze == "auto":  # the advisor looked at the data and chose; its reasons go with the run
        print_advice(resolved.paragraph, quiet)
    return resolved
