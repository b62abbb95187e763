"""Does self-supervised adaptation pay for its time? Per dataset: the probe accuracy before and after adapting
Lite0 from ImageNet with each objective (the training images as the unlabeled pool), then an equal-time A/B:
adapt (the better objective) + fine-tune FT epochs, against fine-tuning alone for as many epochs as fit in the
same total time (measured in the same run), and against fine-tuning alone for the same FT epochs (adaptation's time
for free: if it loses that, no time budget saves it).

    python -m bench.adapt rsscn7 [--adapt-epochs 1] [--ft-epochs 1] [--img-size 160]

Accuracy is the result; the times only set the equal budget. They are the process's CPU seconds
(time.process_time, every thread), not wall seconds: on this 2-core machine other work shifts wall time by 2x
within minutes, while the CPU time a phase needs moves much less. Idle OpenMP threads are told to sleep rather
than spin (OMP_WAIT_POLICY=PASSIVE, set before torch loads), or spinning under contention would count as work.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see the docstring

from core.config import TrainConfig
from core.engine.adapt import adapt
from core.engine.train import train

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="a set in ../shared/datasets, or a path")
    ap.add_argument("--adapt-epochs", type=int, default=1)
    ap.add_argument("--ft-epochs", type=int, default=1)
    ap.add_argument("--img-size", type=int, default=160)
    ap.add_argument("--objectives", default="simsiam,reconstruct")
    args = ap.parse_args()
    data = DATASETS / args.data if (DATASETS / args.data).is_dir() else Path(args.data)
    with tempfile.TemporaryDirectory(prefix="bench-adapt-") as out:
        base = TrainConfig(data=str(data), output_dir=out, freeze="partial", img_size=args.img_size,
                           early_stopping=0)
        adapted = {}
        for objective in args.objectives.split(","):
            t0 = time.process_time()
            r = adapt(base.replace(adapt_objective=objective, adapt_epochs=args.adapt_epochs))
            adapted[objective] = dict(before=r.adaptation["probe_before"], after=r.adaptation["probe_after"],
                                      cpu_seconds=time.process_time() - t0, weights=r.weights)
            print(json.dumps({"set": data.name, "objective": objective,
                              **{k: v for k, v in adapted[objective].items() if k != "weights"}}), flush=True)
        best = max(adapted, key=lambda k: adapted[k]["after"])
        t0 = time.process_time()
        with_adapt = train(base.replace(epochs=args.ft_epochs, weights=adapted[best]["weights"]))
        ft_seconds = time.process_time() - t0
        epochs_alone = max(1, round((adapted[best]["cpu_seconds"] + ft_seconds) / (ft_seconds / args.ft_epochs)))
        alone = train(base.replace(epochs=epochs_alone))
        same_epochs = train(base.replace(epochs=args.ft_epochs))
        print(json.dumps({"set": data.name, "adapt + fine-tune": with_adapt.summary.val_accuracy,
                          "objective": best, "adapt cpu_seconds": adapted[best]["cpu_seconds"],
                          "fine-tune cpu_seconds": ft_seconds, "fine-tune alone": alone.summary.val_accuracy,
                          "epochs alone": epochs_alone,
                          "fine-tune alone, same epochs": same_epochs.summary.val_accuracy}), flush=True)


if __name__ == "__main__":
    main()
