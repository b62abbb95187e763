"""Decoding benchmark: exact vs fast decoding per image, and where a probe run's time goes.

    python -m bench.decode          # also `python -m bench --decode`
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.references import forward_reference
from bench.speed import add_run_flags


def run(args: argparse.Namespace) -> None:
    """Decode paths per image (two threads; a 4000x3000 photo on one), then a probe run taken apart."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from core.config import TrainConfig
    from core.data.dataset import Sample, open_dataset
    from core.data.images import decode_one, geometry
    from core.device import set_threads
    from core.engine.callbacks import Callback
    from core.engine.train import train
    from core.models.backbones import create_model, data_config
    set_threads(0)
    data = Path(args.data)
    ds = open_dataset(data)
    geom = geometry(data_config(create_model(TrainConfig(), 2)))
    samples = ds.train + ds.val

    def per_image_ms(items: list[tuple[Sample, bool]], workers: int = 2, fn=None) -> float:
        fn = fn or (lambda it: decode_one(it[0].path, *geom, exact=it[1]))
        with ThreadPoolExecutor(workers) as pool:
            t0 = time.perf_counter()
            list(pool.map(fn, items))
        return (time.perf_counter() - t0) / len(items) * 1000

    for _ in range(args.repeats):
        print(f"{len(samples)} ants/bees images, 2 threads: exact {per_image_ms([(x, True) for x in samples]):.2f}"
              f" ms/image, fast {per_image_ms([(x, False) for x in samples]):.2f} ms/image", flush=True)
    big = Path(tempfile.mkdtemp()) / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).resize((4000, 3000), Image.BICUBIC) \
        .save(big, quality=90)
    photo = [(Sample(str(big), 0), ex) for ex in (True, False)]
    print(f"a 4000x3000 JPEG, 1 thread: exact {per_image_ms([photo[0]] * 5, 1):.1f} ms, "
          f"fast {per_image_ms([photo[1]] * 5, 1):.1f} ms", flush=True)
    # the floor under decoding: the JPEG decoder alone, then each path with its resize, on one thread
    jpeg = per_image_ms([(x, True) for x in samples], 1, lambda it: Image.open(it[0].path).convert("RGB"))
    print(f"one thread, per ants/bees image: JPEG decoder alone {jpeg:.2f} ms; exact path (+ PIL resize) "
          f"{per_image_ms([(x, True) for x in samples], 1):.2f} ms; fast path (+ torch resize) "
          f"{per_image_ms([(x, False) for x in samples], 1):.2f} ms", flush=True)
    as_probe = [(x, False) for x in ds.train] + [(x, True) for x in ds.val]
    print(f"decoding as the probe does (training fast, validation exact), 2 threads: "
          f"{per_image_ms(as_probe) * len(as_probe) / 1000:.2f} s for {len(as_probe)} images", flush=True)

    class Clock(Callback):
        def on_phase(self, phase, done, total):
            if not hasattr(self, "first_phase"):
                self.first_phase = time.perf_counter()

        def on_fit_start(self, info):
            self.fit_start = time.perf_counter()

    import core.models.features
    busy = {"decode": 0.0, "forward": 0.0}  # seconds summed over the worker threads

    def timed(fn, key):
        def run(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                busy[key] += time.perf_counter() - t
        return run
    core.models.features.decode_or_skip = timed(core.models.features.decode_or_skip, "decode")
    core.models.features.Backbone.__call__ = timed(core.models.features.Backbone.__call__, "forward")
    out = Path(tempfile.mkdtemp(prefix="bench-decode-"))
    os.environ["TRANSFERLAB_CACHE"] = str(out / "_cache")
    train(TrainConfig(data=str(data), output_dir=str(out), freeze="probe", epochs=args.probe_epochs))  # ONNX
    for _ in range(args.repeats):
        shutil.rmtree(out / "_cache" / "features")
        busy.update(decode=0.0, forward=0.0)
        clock, t0 = Clock(), time.perf_counter()
        train(TrainConfig(data=str(data), output_dir=str(out), freeze="probe", epochs=args.probe_epochs), [clock])
        end = time.perf_counter()
        fwd = forward_reference(len(samples), seconds=1.0)
        w = torch.get_num_threads()
        print(f"probe, new data: {end - t0:.2f} s = set-up {clock.first_phase - t0:.2f} s + reading, decoding and "
              f"features {clock.fit_start - clock.first_phase:.2f} s (per worker: decode {busy['decode'] / w:.2f} s,"
              f" forward {busy['forward'] / w:.2f} s) + {args.probe_epochs} head epochs and the bundle "
              f"{end - clock.fit_start:.2f} s; ORT forward reference {fwd['seconds']:.2f} s", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__.splitlines()[0])
    add_run_flags(parser)
    run(parser.parse_args())
