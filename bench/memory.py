"""Memory benchmark: a probe run on many synthetic images in a subprocess, and its peak resident memory.

    python -m bench.memory          # also `python -m bench --memory`
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory-images", type=int, default=20000)


def run(args: argparse.Namespace) -> None:
    """Generate N synthetic JPEGs and run a probe training in a subprocess; report its peak RSS."""
    from PIL import Image
    root = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for i in range(args.memory_images):
        cls = f"class{i % 10}"
        (root / cls).mkdir(exist_ok=True)
        base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(base).resize((320, 240), Image.BILINEAR).save(root / cls / f"{i}.jpg", quality=85)
    print(f"generated {args.memory_images} images in {time.perf_counter() - t0:.0f}s under {root}", flush=True)
    code = ("import resource, time, sys\nfrom core.config import TrainConfig\nfrom core.engine.train import train\n"
            f"t=time.perf_counter(); r = train(TrainConfig(data={str(root)!r}, freeze='probe', epochs=3, "
            f"output_dir={str(root / '_runs')!r}))\n"
            "print('status', r.status, 'seconds', round(time.perf_counter()-t, 1), 'val_acc', "
            "round(r.summary.val_accuracy, 3))\n"
            "print('peak_rss_mb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)")
    env = {**os.environ, "TRANSFERLAB_CACHE": str(root / "_cache")}  # cold: nothing cached for these images
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    print(proc.stdout, proc.stderr[-2000:] if proc.returncode else "")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    add_arguments(parser)
    run(parser.parse_args())
