"""Command line: `python -m core train|distill|predict|export|runs|...`. Same engine and config as the web UI.

Every TrainConfig field is a flag (`--val-fraction 0.3`), generated from the dataclass so the CLI and the
config cannot drift; `--config run.yaml` loads a file first and flags override it. Errors print one sentence
and exit with status 2.

The parsers are in parsers.py, what the commands print while they work in console.py, and the commands in one
module per group: training.py (train, distill), delivery.py (predict, export), planning.py (plan, backbones,
lr-find), adaptation.py (adapt), reports.py (runs, inspect, suggest).
"""

from __future__ import annotations

import sys

from core.cli.adaptation import cmd_adapt
from core.cli.delivery import cmd_export, cmd_predict
from core.cli.parsers import build_parser
from core.cli.planning import cmd_backbones, cmd_lr_find, cmd_plan
from core.cli.reports import cmd_inspect, cmd_runs, cmd_suggest
from core.cli.training import cmd_distill, cmd_train

HANDLERS = {"train": cmd_train, "predict": cmd_predict, "export": cmd_export, "runs": cmd_runs, "plan": cmd_plan,
            "lr-find": cmd_lr_find, "inspect": cmd_inspect, "backbones": cmd_backbones, "adapt": cmd_adapt,
            "distill": cmd_distill, "suggest": cmd_suggest}


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__.splitlines()[0]).parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:  # all our errors are phrased for the user
        print(f"error: {exc}", file=sys.stderr)
        return 2
