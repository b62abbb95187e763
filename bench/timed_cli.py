"""`python -m core ARGS` timing itself: python -m bench.timed_cli TIMING.json ARGS...

The same command as `python -m core ARGS` (core.cli.main), in a process that notes when its imports were done and
when each phase of a training ended, wall clock and CPU time of the whole process (all threads; CPU time is far
less distorted than wall time on a loaded machine). TIMING.json gets {phase: [wall s, cpu s]} for: imports, set-up
(dataset scan, model: until the first progress phase), features / decoding (until the first epoch starts), epochs,
the end of the run (evaluation, leakage, bundle, record, card), then the rest of the process (the summary printed),
and "after_imports": everything after the imports.
"""

from __future__ import annotations

import time

T0, C0 = time.perf_counter(), time.process_time()

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import core.cli  # noqa: E402
import core.cli.training  # noqa: E402
import core.engine.train  # noqa: E402,F401  (what `python -m core train` imports before it starts)
from core.engine.callbacks import Callback  # noqa: E402

MARKS = [("imports", time.perf_counter() - T0, time.process_time() - C0)]


class Clock(Callback):
    """Marks the end of each phase of a run (the last mark of a phase wins: an epoch end moves 'epochs' on)."""

    def mark(self, name: str) -> None:
        now = (name, time.perf_counter() - T0, time.process_time() - C0)
        if MARKS[-1][0] == name:
            MARKS[-1] = now
        else:
            MARKS.append(now)

    def on_phase(self, phase: str, done: int, total: int) -> None:
        if len(MARKS) == 1:
            self.mark("set-up")
        elif phase in ("computing features", "decoding images"):
            self.mark("features / decoding")

    def on_fit_start(self, info) -> None:
        self.mark("features / decoding")

    def on_epoch_end(self, m) -> None:
        self.mark("epochs")

    def on_fit_end(self, result) -> None:
        self.mark("end of run")


def main() -> int:
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    make = core.cli.training.training_callbacks
    core.cli.training.training_callbacks = lambda quiet: [*make(quiet), Clock()]
    rc = core.cli.main(argv)
    MARKS.append(("rest of the process", time.perf_counter() - T0, time.process_time() - C0))
    phases, prev = {}, (0.0, 0.0)
    for name, wall, cpu in MARKS:
        phases[name], prev = [wall - prev[0], cpu - prev[1]], (wall, cpu)
    phases["after_imports"] = [prev[0] - MARKS[0][1], prev[1] - MARKS[0][2]]
    phases["total"] = list(prev)
    out.write_text(json.dumps(phases))
    return rc


if __name__ == "__main__":
    sys.exit(main())
