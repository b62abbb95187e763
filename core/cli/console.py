"""What the command line prints while it works: the redrawn progress line, the training progress bar, dataset
warnings, the advisor's paragraph and a run's summary. Progress and warnings go to stderr, results to stdout."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from core.engine.callbacks import Callback, FitInfo


def show_progress(phase: str, done: int, total: int) -> None:
    """The progress of a long phase, one line on stderr redrawn in place (every command shows it this way)."""
    sys.stderr.write(f"\r{phase}: {done}/{total}   ")


def training_callbacks(quiet: bool) -> list[Callback]:
    """The progress bar (unless quiet) and the dataset warnings, which print after the bar's first line."""
    return [DatasetWarnings()] if quiet else [ProgressBar(), DatasetWarnings()]


def print_advice(paragraph: str, quiet: bool) -> None:
    """The advisor's reasons, on a line of their own after a progress line."""
    sys.stderr.write(("" if quiet else "\n") + "advisor: " + paragraph + "\n")


def print_summary(run_dir: str, s) -> None:
    print(f"\nrun: {run_dir}")
    print(f"status: {s.status}")
    if s.note:
        print(s.note)
    for note in s.notes:
        print(f"note: {note}")
    for name, report in (("val", s.val), ("test", s.test)):
        if report is None:
            continue
        print(f"{name}_accuracy: {report.accuracy:.4f}  balanced_accuracy: {report.balanced_accuracy:.4f}  "
              f"macro_f1: {report.macro_f1:.4f}  n={report.num}")
        for c, m in report.per_class.items():
            print(f"  {c:<20} precision {m['precision']:.3f}  recall {m['recall']:.3f}  f1 {m['f1']:.3f}  "
                  f"n={m['support']}")
    for task, t in (s.tasks or {}).items():  # multi-task runs: every task's scores and its own bundle
        print(f"task {task}: " + "  ".join(f"{split}_accuracy {t[split]['accuracy']:.4f} macro_f1 "
                                           f"{t[split]['macro_f1']:.4f} n={t[split]['num']}"
                                           for split in ("val", "test") if t.get(split))
              + f"  bundle: {Path(run_dir) / 'tasks' / task / 'bundle'}")
    if s.has_results and s.tasks:
        print(f"best_epoch: {s.best_epoch} of {s.epochs_run}  train_seconds: {s.train_seconds:.1f}")
        print(f"multi-output model: {Path(run_dir) / 'multitask.torchscript.pt'}")
        print(f"each task as a run of its own: {Path(run_dir) / 'tasks'}/<task>/ (or --task NAME with runs, "
              f"predict, export, inspect)")
        return
    if s.has_results:
        print(f"best_epoch: {s.best_epoch} of {s.epochs_run}  train_seconds: {s.train_seconds:.1f}")
        print(f"bundle: {Path(run_dir) / 'bundle'}")


class DatasetWarnings(Callback):
    """Prints what the Data page warns about when training starts: dataset warnings and skipped files.

    Installed with --quiet too: a class folder left out for want of usable images changes what the model
    learns, so it is not progress a person may choose not to see.
    """

    def __init__(self, limit: int = 10):
        self.limit = limit

    def on_fit_start(self, info: FitInfo) -> None:
        lines = [f"warning: {w}" for w in info.warnings] + _skipped_lines(info.skipped, self.limit)
        if lines:
            sys.stderr.write("\n".join(lines) + "\n")


def _skipped_lines(skipped: list[dict], limit: int) -> list[str]:
    """'skipped N file(s):' then one 'folder/file: reason' line each, at most `limit` of them."""
    if not skipped:
        return []
    lines = [f"skipped {len(skipped)} file(s):"]
    lines += [f"  {Path(s['path']).parent.name}/{Path(s['path']).name}: {s['reason']}" for s in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  and {len(skipped) - limit} more")
    return lines


class ProgressBar(Callback):
    """A one-line text progress bar on stderr (engine callback)."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.phase_line_open = False  # a phase line is redrawn with \r and has no newline yet

    def on_fit_start(self, info: FitInfo) -> None:
        # end a probe's "computing features" line first, so this line and the warnings after it start clean
        start = "\n" if self.phase_line_open else ""
        sys.stderr.write(f"{start}{info.mode}: {info.trainable_params:,} of {info.total_params:,} parameters "
                         f"trainable, {sum(info.counts['train'].values())} train / "
                         f"{sum(info.counts['val'].values())} val images, {info.device}\n")
        self.phase_line_open = False

    def on_phase(self, phase: str, done: int, total: int) -> None:
        show_progress(phase, done, total)
        self.phase_line_open = True

    def on_batch_end(self, m) -> None:
        width = 24
        frac = m.step / m.steps_per_epoch
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        sys.stderr.write(f"\repoch {m.epoch} [{bar}] loss {m.loss:.3f}  {m.images_per_sec:.0f} img/s  "
                         f"ETA {m.eta:.0f}s   ")

    def on_epoch_end(self, m) -> None:
        tasks = "".join(f" {k} {t['val_acc']:.3f}" for k, t in (m.tasks or {}).items())  # multi-task: each task
        sys.stderr.write(f"\repoch {m.epoch}: train loss {m.train_loss:.3f} acc {m.train_acc:.3f} | val loss "
                         f"{m.val_loss:.3f} acc {m.val_acc:.3f}{' |' + tasks if tasks else ''} | {m.seconds:.1f}s"
                         f"{' ' * 20}\n")
