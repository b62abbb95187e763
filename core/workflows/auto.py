"""`freeze: auto` resolved before a training, in one place for every caller: the training jobs behind the pages,
`python -m core train` and `python -m core distill`. The engine trains concrete configs only.

When freeze is auto, the advisor (core/plan/advisor.py) looks at the data (for a multi-task run, at the images
labeled for its first task) and chooses the freezing, input size and epochs; its reasons go with the run as notes.
Any other config comes back as it is, with no notes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from core.config import TrainConfig
from core.data.multitask import single_task_view
from core.plan.advisor import advise


@dataclass(frozen=True)
class Resolved:
    config: TrainConfig  # concrete: freeze is never "auto"
    notes: list[str] = field(default_factory=list)  # the advisor's reasons; none when freeze was chosen by hand

    @property
    def paragraph(self) -> str:
        return " ".join(self.notes)


def resolve_auto(cfg: TrainConfig, progress: Callable[[str, int, int], None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False) -> Resolved:
    """cfg with `auto` replaced by the advisor's choice (scoring the chosen backbone only, all the decision needs),
    and the advisor's reasons; progress reports the look at the data, should_stop cuts it short."""
    if cfg.freeze != "auto":
        return Resolved(cfg)
    advice = advise(cfg, single_task_view(cfg), progress=progress, should_stop=should_stop, rank_all=False)
    return Resolved(advice.config, advice.reasons)
