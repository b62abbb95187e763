"""Mixup / CutMix against none, with the default fine-tuning recipe (partial, 8 epochs), on dev sets.

    python -m bench.mixup [SET ...]          # default: hymenoptera rsscn7 from ../shared/datasets

Delivered (best-epoch) validation accuracy per setting; one seed, so a difference of one or two validation images
is noise (one image is 0.65 points on ants/bees, 1.4 on rsscn7).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from core.config import TrainConfig
from core.engine.train import train

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="*", default=["hymenoptera", "rsscn7"])
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mixup-") as out:
        for name in args.sets:
            row = {"set": name}
            for mode in ("off", "mixup", "cutmix"):
                cfg = TrainConfig(data=str(DATASETS / name), freeze="partial", epochs=args.epochs, mixup=mode,
                                  output_dir=out)
                row[mode] = train(cfg).summary.val_accuracy
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
