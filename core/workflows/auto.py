"""`freeze: auto` resolved and trained, in one place for every caller: the training jobs behind the pages,
`python -m core train` and `python -m core distill`. The engine trains concrete configs only.

When freeze is auto, the advisor (core/plan/advisor.py) looks at the training images (for a multi-task run, at
the images labeled for its first task) and plans the candidates; its reasons go with the run as notes. Any other
config comes back as it is, with no notes. `train_resolved` trains the plan: the probe candidate first (a run of
its own), then the fine-tuning that starts from it (LP-FT) into the run the caller watches; the engine keeps the
probe as the delivered model unless a fine-tuned epoch beats it on validation, and says which in the notes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.config import TrainConfig
from core.data.multitask import single_task_view
from core.engine.callbacks import Callback, FitResult
from core.engine.train import train
from core.plan.advisor import advise
from core.plan.estimate import Estimate
from core.runs import RunDir, Status


@dataclass(frozen=True)
class Resolved:
    config: TrainConfig  # concrete: freeze is never "auto"
    notes: list[str] = field(default_factory=list)  # the advisor's reasons; none when freeze was chosen by hand
    probe_first: TrainConfig | None = None  # auto's probe candidate, trained before config starts from it (LP-FT)
    estimate: Estimate | None = None  # the advisor's time estimate for the whole plan (auto only)

    @property
    def paragraph(self) -> str:
        return " ".join(self.notes)


def resolve_auto(cfg: TrainConfig, progress: Callable[[str, int, int], None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False) -> Resolved:
    """cfg with `auto` replaced by the advisor's plan (scoring the chosen backbone only, all the decision needs),
    and the advisor's reasons; progress reports the look at the data, should_stop cuts it short."""
    if cfg.freeze != "auto":
        return Resolved(cfg)
    advice = advise(cfg, single_task_view(cfg), progress=progress, should_stop=should_stop, rank_all=False)
    # a multi-task run fine-tunes without the probe candidate (starting from a run keeps one task's head only)
    return Resolved(advice.config, advice.reasons, None if cfg.task_spec.several else advice.probe_first,
                    advice.estimate)


class _Phases(Callback):
    """The probe candidate's phases (computing features) reported to the caller's progress."""

    def __init__(self, progress: Callable[[str, int, int], None]):
        self.progress = progress

    def on_phase(self, phase: str, done: int, total: int) -> None:
        self.progress(f"probe candidate: {phase}", done, total)


def train_resolved(resolved: Resolved, callbacks: Sequence[Callback] = (), stop: threading.Event | None = None,
                   run: RunDir | None = None, resume: bool = False,
                   progress: Callable[[str, int, int], None] | None = None) -> FitResult:
    """Train a resolved config: with a probe candidate, the probe first (its own run in the same output folder),
    then the fine-tuning from its head into `run`. A probe that fails or is stopped ends it there."""
    if resolved.probe_first is None or resume:
        return train(resolved.config, callbacks, stop=stop, run=run, resume=resume, notes=resolved.notes)
    probe_cfg = resolved.probe_first.replace(run_name=resolved.probe_first.run_name or "auto: probe candidate")
    probe = train(probe_cfg, [_Phases(progress)] if progress else [], stop=stop,
                  notes=[*resolved.notes, "Auto's first candidate: the probe the fine-tuning starts from."])
    if probe.status != Status.COMPLETED or (stop is not None and stop.is_set()):
        return probe
    note = (f"Auto's first candidate, a probe (run {Path(probe.run_dir).name}), "
            f"reached {probe.summary.val_accuracy:.1%} on validation; this run fine-tunes from its head.")
    return train(resolved.config.replace(init_from=probe.run_dir), callbacks, stop=stop, run=run,
                 notes=[*resolved.notes, note])
