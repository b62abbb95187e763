"""Skewed classes and test-time augmentation on every dev set: accuracy, balanced accuracy and macro-F1 with class
balancing off / loss weights / balanced sampler, and with the mirrored view averaged (tta flip) or not.

    python -m bench.balance [--sets hymenoptera rsscn7 ...] [--seeds 0 1]

Each dev set runs as it is ("natural") and made skewed by subsampling its training images (seeded): in "skewed 2x"
and "skewed 5x" a random half of the classes (at least one) keeps 1/2 resp. 1/5 of its training images; validation
images stay as they are. Every cell is a probe run (the advisor's probe settings, core/plan/advisor.py) through
core.engine.train with the setting named; features come from the machine's cache after the first run. The TTA
columns are the balance-off runs with tta flip; "predict time" is LoadedModel.predict with tta flip over tta off,
the two timed in alternation in one process (a ratio: the machine may be loaded).
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

from core.config import TrainConfig
from core.engine.train import train
from core.export.bundle import load_bundle
from core.plan.advisor import PROBE_EPOCHS, PROBE_LR

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DEV_SETS = ("hymenoptera", "rsscn7", "magnetic_tile", "pbc_blood", "cifar10", "flowers17")
VARIANTS = {"natural": 1, "skewed 2x": 2, "skewed 5x": 5}
MODES = ("off", "weights", "sampler")


def skewed_copy(src: Path, keep_one_in: int, seed: int, dest: Path) -> Path:
    """src with a seeded random half of its classes (at least one) keeping 1/keep_one_in of their training images
    (copies: the dataset scan skips symbolic links); val/ and test/ as they are."""
    rng = random.Random(seed)
    classes = sorted(p.name for p in (src / "train").iterdir() if p.is_dir())
    small = set(rng.sample(classes, max(1, len(classes) // 2)))
    for split in ("train", "val", "test"):
        if not (src / split).is_dir():
            continue
        for c in classes:
            files = sorted(f for f in (src / split / c).iterdir() if f.is_file())
            if split == "train" and c in small:
                files = rng.sample(files, max(1, round(len(files) / keep_one_in)))
            (dest / split / c).mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copyfile(f, dest / split / c / f.name)
    return dest


def scores(cfg: TrainConfig) -> dict:
    r = train(cfg)
    v = r.summary.val
    return {"acc": v.accuracy, "bal": v.balanced_accuracy, "f1": v.macro_f1, "run": r.run_dir}


def predict_time_ratio(bundle: Path, images: list[Path], repeats: int = 3) -> float:
    """LoadedModel.predict with tta flip over tta off on the same images, timed in alternation."""
    m = load_bundle(bundle)
    times = {"off": [], "flip": []}
    m.predict(images[:4])  # warm-up
    for _ in range(repeats):
        for tta in ("off", "flip"):
            m.tta = tta
            t = time.perf_counter()
            m.predict(images)
            times[tta].append(time.perf_counter() - t)
    return min(times["flip"]) / min(times["off"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="*", default=list(DEV_SETS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0], help="subsampling and training seeds")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--no-timing", action="store_true", help="skip the predict-time ratio")
    args = ap.parse_args()
    head = ["dataset", "variant", "seed", "largest/smallest"] + [f"{m} {k}" for m in MODES for k in ("acc", "bal acc",
                                                                                                     "macro-F1")]
    head += ["tta acc", "tta bal acc", "tta macro-F1"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head), flush=True)
    timed = None
    with tempfile.TemporaryDirectory(prefix="bench-balance-") as tmp:
        for name in args.sets:
            for variant in args.variants:
                for seed in args.seeds:
                    data = DATASETS / name
                    if VARIANTS[variant] > 1:
                        data = skewed_copy(data, VARIANTS[variant], seed, Path(tmp) / f"{name}-{variant[-2:]}-{seed}")
                    counts = [sum(1 for f in c.iterdir() if f.is_file()) for c in (data / "train").iterdir()]
                    cfg = TrainConfig(data=str(data), freeze="probe", epochs=PROBE_EPOCHS, lr=PROBE_LR, seed=seed,
                                      output_dir=str(Path(tmp) / "runs"))
                    cells = [scores(cfg.replace(balance=m)) for m in MODES]
                    tta = scores(cfg.replace(balance="off", tta="flip"))
                    row = [name, variant, str(seed), f"{max(counts) / min(counts):.1f}"]
                    row += [f"{c[k]:.3f}" for c in (*cells, tta) for k in ("acc", "bal", "f1")]
                    print("| " + " | ".join(row) + " |", flush=True)
                    timed = timed or (Path(tta["run"]) / "bundle", sorted((data / "val").rglob("*.*"))[:16])
        if timed and not args.no_timing:
            print(f"\npredict time, tta flip / off (LoadedModel.predict, the first set's bundle, 16 images, "
                  f"alternated): {predict_time_ratio(*timed):.2f}x")


if __name__ == "__main__":
    main()
