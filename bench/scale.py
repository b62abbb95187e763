"""Scale benchmark: scan, hash, leakage and probe on synthetic sets of 1,000 / 10,000 / 100,000 small images.

    python -m bench.scale                          # all sizes; the probe up to --probe-max images
    python -m bench.scale --sizes 1000 10000 --probe-max 0

The images (48 px photo-like JPEGs, 10 classes, train/ and val/, one validation image in 500 a re-encoded copy of
a training image) are generated once under --folder (a folder per size, reused by later runs).
Each stage of each size runs in its own process, timed from inside, with its peak resident memory:
  scan     open_dataset (list, check and split the files)
  hash     fingerprints of every image into an empty machine cache (core/data/fingerprints.py)
  leakage  leakage_summary with those fingerprints cached (what the end of a run and the Data page add)
  probe    a 1-epoch probe run from an empty cache at 64 px (features, head, and its own leakage check)
Times are per image and, for comparison across sizes on a busy machine, as a ratio to the same stage at 10,000.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10
LEAK_EVERY = 500  # one validation image in this many is a re-encoded copy of a training image


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    p.add_argument("--probe-max", type=int, default=10000, help="largest size the probe stage runs at")
    p.add_argument("--folder", default=str(Path(tempfile.gettempdir()) / "transferlab-bench-scale"))


def picture(rng: np.random.Generator, size: int = 48):
    """A small photo-like picture: smooth colour at two scales plus noise (distinct per draw)."""
    from PIL import Image
    coarse = Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    fine = Image.fromarray(rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    arr = 0.65 * np.asarray(coarse, np.float32) + 0.35 * np.asarray(fine, np.float32)
    arr += rng.normal(0, 4, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def generate(folder: Path, n: int) -> Path:
    """folder/<n>: n images, train/ and val/ (20%), written once (a marker file says complete)."""
    root = folder / str(n)
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    n_val = n // 5
    for i in range(n):
        split, cls = ("val" if i < n_val else "train"), f"class{i % CLASSES}"
        out = root / split / cls / f"{i:06d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        if split == "val" and i % LEAK_EVERY == 0 and i + n_val < n:  # a copy of a training image, re-encoded
            picture(np.random.default_rng([n, i + n_val])).save(out, quality=60)
        else:
            picture(np.random.default_rng([n, i])).save(out, quality=90)
    (root / ".complete").write_text("ok")
    return root


STAGE = """
import json, resource, sys, time
from core.data.dataset import open_dataset
stage, root, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {}
t = time.perf_counter()
if stage == "scan":
    open_dataset(root)
elif stage == "hash":
    from core.data.fingerprints import fingerprints
    ds = open_dataset(root)
    t = time.perf_counter()
    fingerprints([s.path for s in ds.train + ds.val])
elif stage == "leakage":
    from core.data.duplicates import leakage_summary
    ds = open_dataset(root)
    t = time.perf_counter()
    out = leakage_summary(ds)
else:
    from core.config import TrainConfig
    from core.engine.train import train
    r = train(TrainConfig(data=root, freeze="probe", epochs=1, img_size=64, output_dir=sys.argv[4]))
    out = {"status": r.status, "val_acc": r.summary.val_accuracy, "leakage": r.summary.leakage}
out.pop("leaked_val_paths", None)
if "leakage" in out and out["leakage"]:
    out["leakage"].pop("leaked_val_paths", None)
out.update(seconds=time.perf_counter() - t, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print("RESULT", json.dumps(out))
"""


def run_stage(stage: str, root: Path, n: int, cache: Path, runs: Path) -> dict:
    env = {**os.environ, "TRANSFERLAB_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-c", STAGE, stage, str(root), str(n), str(runs)], cwd=ROOT,
                          capture_output=True, text=True, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{stage} at {n} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[7:])


def run(args: argparse.Namespace) -> None:
    folder = Path(args.folder)
    results: dict[tuple[int, str], dict] = {}
    for n in sorted(args.sizes):
        root = generate(folder, n)
        work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
        for stage in ("scan", "hash", "leakage", "probe"):
            if stage == "probe" and n > args.probe_max:
                print(f"{n}: probe not run (--probe-max {args.probe_max})", flush=True)
                continue
            cache = work / ("cache-probe" if stage == "probe" else "cache")  # the probe starts from nothing
            results[n, stage] = r = run_stage(stage, root, n, cache, work / "runs")
            print(n, stage, json.dumps(r), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    base = {stage: r["seconds"] / n for (n, stage), r in results.items() if n == 10000}
    print("\n| images | stage | ms per image | ratio to 10,000 | peak memory (MB) | result |")
    print("|---|---|---|---|---|---|")
    for (n, stage), r in results.items():
        per = r["seconds"] / n
        ratio = f"{per / base[stage]:.2f}" if stage in base else "-"
        shown = {k: v for k, v in r.items() if k not in ("seconds", "peak_mb")}
        print(f"| {n:,} | {stage} | {1000 * per:.2f} | {ratio} | {r['peak_mb']:.0f} | "
              f"{json.dumps(shown) if shown else ''} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    add_arguments(parser)
    run(parser.parse_args())
