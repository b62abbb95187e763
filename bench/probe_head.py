"""The probe head's recipe on every dev set: the engine's probe with the fine-tuning defaults (8 epochs, lr 1e-3)
and with the advisor's probe settings (core/plan/advisor.py PROBE_EPOCHS, PROBE_LR), beside the closed-form ridge
probe on the same features (the ranking's score, cross-validated).

    python -m bench.probe_head [DATA ...]

Features come from the machine's cache after the first run, so this takes seconds per set once warm.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from core.analysis.linear import cv_accuracy
from core.config import TrainConfig
from core.data.dataset import open_dataset
from core.engine.train import train
from core.models.features import pretrained_features
from core.plan.advisor import PROBE_EPOCHS, PROBE_LR

ROOT = Path(__file__).resolve().parents[1]
DEV_SETS = ("hymenoptera", "rsscn7", "magnetic_tile", "pbc_blood")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="*", type=Path, default=[ROOT.parent / "shared" / "datasets" / d for d in DEV_SETS])
    args = ap.parse_args()
    print(f"| dataset | probe 8 epochs, lr 1e-3 | probe {PROBE_EPOCHS} epochs, lr {PROBE_LR:g} | ridge 5-fold CV |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        for data in args.data:
            cfg = TrainConfig(data=str(data), freeze="probe", output_dir=tmp, early_stopping=0)
            accs = [train(cfg.replace(epochs=e, lr=lr)).summary.val_accuracy for e, lr in ((8, 1e-3),
                                                                                           (PROBE_EPOCHS, PROBE_LR))]
            ds = open_dataset(cfg.data, cfg.val_fraction, cfg.seed)
            feats, _ = pretrained_features(cfg, ds.train + ds.val, exact=False)
            rows = [(f[0], s.label) for f, s in zip(feats, ds.train + ds.val, strict=True) if f is not None]
            ridge = cv_accuracy(np.stack([r[0] for r in rows]), np.array([r[1] for r in rows]), len(ds.classes))
            print(f"| {data.name} | {accs[0]:.1%} | {accs[1]:.1%} | {ridge:.1%} |", flush=True)


if __name__ == "__main__":
    main()
