"""Speed benchmark: the PyTorch tutorial way vs. this engine vs. pure compute, in one process, as ratios.

    python -m bench                 # probe + full fine-tuning on the ants/bees sample data
    python -m bench --memory        # probe on 20,000 synthetic images in a subprocess: peak resident memory
    python -m bench --decode        # exact vs fast decoding, and where a probe run's time goes

Everything runs on the same machine in the same run, so only the ratios matter (machines of one kind differ
by 1.5x). The tutorial baseline follows PyTorch's transfer-learning tutorial: ImageFolder, PIL transforms,
DataLoader with 2 workers, batch 4, SGD(0.001, momentum 0.9), StepLR(7, 0.1), backbone run forward every
epoch even when frozen. The tutorial's frozen epochs are timed for --tutorial-epochs and scaled to 25.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "hymenoptera"


# ---------------------------------------------------------------------------------------------------------
# baseline: the tutorial way

def tutorial(data: Path, epochs: int, frozen: bool) -> dict:
    from torchvision import datasets, transforms

    from core.config import TrainConfig
    from core.models.backbones import create_model, data_config
    model = create_model(TrainConfig(), 2)
    cfg = data_config(model)
    norm = transforms.Normalize(cfg["mean"], cfg["std"])
    tfs = {"train": transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                        transforms.ToTensor(), norm]),
           "val": transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                      norm])}
    sets = {k: datasets.ImageFolder(data / k, tfs[k]) for k in tfs}
    loaders = {k: torch.utils.data.DataLoader(sets[k], batch_size=4, shuffle=k == "train", num_workers=2)
               for k in sets}
    if frozen:
        for p in model.parameters():
            p.requires_grad = False
        for p in model.get_classifier().parameters():
            p.requires_grad = True
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.001, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)
    crit = nn.CrossEntropyLoss()
    accs, times = [], []
    t0 = time.perf_counter()
    for _ in range(epochs):
        te = time.perf_counter()
        for phase in ("train", "val"):
            model.train(phase == "train")
            correct = 0
            for x, y in loaders[phase]:
                opt.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    out = model(x)
                    loss = crit(out, y)
                    if phase == "train":
                        loss.backward()
                        opt.step()
                correct += (out.argmax(1) == y).sum().item()
            if phase == "train":
                sched.step()
            else:
                accs.append(correct / len(sets["val"]))
        times.append(time.perf_counter() - te)
    return {"wall": time.perf_counter() - t0, "epoch_s": statistics.median(times), "best": max(accs),
            "final": accs[-1], "n_train": len(sets["train"]), "n_val": len(sets["val"])}


# ---------------------------------------------------------------------------------------------------------
# this engine

def engine(data: Path, out: Path, **overrides) -> dict:
    from core.config import TrainConfig
    from core.engine.train import train
    cfg = TrainConfig(data=str(data), output_dir=str(out), **overrides)
    t0 = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in Path(result.run_dir, "metrics.jsonl").read_text().splitlines()]
    return {"wall": wall, "epoch_s": statistics.median([r["seconds"] for r in rows]),
            "best": max(r["val_acc"] for r in rows), "final": rows[-1]["val_acc"],
            "acc": result.summary.val_accuracy}


# ---------------------------------------------------------------------------------------------------------
# pure compute references (random tensors of the same shapes)

def forward_reference(n_images: int, seconds: float = 2.0) -> dict:
    """Fastest forward pass over n images: ONNX Runtime and torch eager (channels_last) at several batches."""
    import onnxruntime as ort

    from core.config import TrainConfig
    from core.models.backbones import FeatureExtractor, create_model
    model = FeatureExtractor(create_model(TrainConfig(), 2)).eval().to(memory_format=torch.channels_last)
    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/m.onnx"
        with warnings.catch_warnings():  # the legacy exporter, as in core.models.features
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), path, input_names=["x"],
                              dynamic_axes={"x": {0: "b"}}, dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        for bs in (1, 4, 8, 16):
            x = np.random.randn(bs, 3, 224, 224).astype(np.float32)
            best[f"onnxruntime bs{bs}"] = _rate(lambda x=x: sess.run(None, {"x": x}), bs, seconds)
        # what the engine does on CPU: one single-threaded session per core, each on its own share of the images
        n = torch.get_num_threads()
        opts.intra_op_num_threads = 1
        sessions = [ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]) for _ in range(n)]
        for bs in (4, 16):
            x = np.random.randn(bs, 3, 224, 224).astype(np.float32)
            best[f"onnxruntime {n} sessions x 1 thread bs{bs}"] = _parallel_rate(
                [lambda x=x, s=s: s.run(None, {"x": x}) for s in sessions], bs, seconds)
    with torch.inference_mode():
        for fmt in (torch.channels_last, torch.contiguous_format):
            model = model.to(memory_format=fmt)
            for bs in (4, 16):
                x = torch.randn(bs, 3, 224, 224).contiguous(memory_format=fmt)
                best[f"torch {str(fmt).split('.')[-1]} bs{bs}"] = _rate(lambda x=x, m=model: m(x), bs, seconds)
    name = max(best, key=best.get)
    eager = max((k for k in best if k.startswith("torch")), key=best.get)
    return {"best": name, "img_s": best[name], "seconds": n_images / best[name], "all": best,
            "eager_best": eager, "eager_seconds": n_images / best[eager]}


def train_step_reference(n_train: int, n_val: int, batch: int, seconds: float = 6.0) -> dict:
    """forward+backward+AdamW for n_train images at `batch`, plus forward-only for n_val: one ideal epoch."""
    from core.config import TrainConfig
    from core.models.backbones import create_model
    model = create_model(TrainConfig(), 2).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))

    def step():
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.train()
    train_rate = _rate(step, batch, seconds)
    model.eval()
    xv = torch.randn(16, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        eval_rate = _rate(lambda: model(xv), 16, seconds / 3)
    return {"train_img_s": train_rate, "eval_img_s": eval_rate,
            "epoch_s": n_train / train_rate + n_val / eval_rate}


def _median(runs: list[dict], key: str) -> dict:
    return sorted(runs, key=lambda r: r[key])[len(runs) // 2]


def _parallel_rate(fns: list, batch: int, seconds: float) -> float:
    """Images/s of len(fns) threads each calling its fn for `seconds` (ONNX Runtime releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(len(fns)) as pool:
        return sum(pool.map(lambda fn: _rate(fn, batch, seconds), fns))


def _rate(fn, batch: int, seconds: float) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += batch
    return n / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------------

def run_speed(args: argparse.Namespace) -> dict:
    from core.device import set_threads
    threads = set_threads(0)
    data = Path(args.data)
    out = Path(tempfile.mkdtemp(prefix="bench-runs-"))
    os.environ["TRANSFERLAB_CACHE"] = str(out / "_cache")  # a machine's first run: no features, no ONNX model
    res = {"machine": f"{platform.processor() or platform.machine()} ({_cpu_name()}), {threads} threads",
           "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    print(f"# bench {res['date']} on {res['machine']}, torch {res['torch']}", flush=True)
    res["probe"] = engine(data, out, freeze="probe", epochs=args.probe_epochs)
    print("probe (cold: first run on this machine, exports the ONNX model)", res["probe"], flush=True)
    # this VM's speed drifts by +-15% within a minute: the probe and its reference alternate, medians of N
    new_data, warm, fwd = [], [], []
    for _ in range(args.repeats):
        shutil.rmtree(out / "_cache" / "features")  # new images, same backbone: the ONNX model is reused
        new_data.append(engine(data, out, freeze="probe", epochs=args.probe_epochs))
        print("probe (new data: features cold, ONNX model cached)", new_data[-1], flush=True)
        warm.append(engine(data, out, freeze="probe", epochs=args.probe_epochs, lr=2e-3))  # same features
        print("probe (warm cache)", warm[-1], flush=True)
        fwd.append(forward_reference(397, seconds=1.0))
        print("forward reference", fwd[-1], flush=True)
    res["probe_new_data"], res["probe_warm"] = _median(new_data, "wall"), _median(warm, "wall")
    res["fwd_ref"] = _median(fwd, "seconds")
    res["tut_frozen"] = tutorial(data, args.tutorial_epochs, frozen=True)
    print("tutorial frozen", res["tut_frozen"], flush=True)
    if not args.probe_only:
        full, step = [], []
        for _ in range(args.repeats):  # alternated like the probe runs: medians of N
            full.append(engine(data, out, freeze="full", epochs=args.epochs, early_stopping=0,
                               batch_size=args.batch))
            print("engine full", full[-1], flush=True)
            step.append(train_step_reference(244, 153, batch=args.batch))
            print("train-step reference", step[-1], flush=True)
        res["full"], res["step_ref"] = _median(full, "epoch_s"), _median(step, "epoch_s")
        res["tut_full"] = tutorial(data, args.epochs, frozen=False)
        print("tutorial full", res["tut_full"], flush=True)
        # partial freezing without augmentation: frozen prefix cached once vs run in every step
        part = dict(freeze="partial", epochs=args.epochs, early_stopping=0, batch_size=args.batch,
                    augmentation="none")
        res["partial_cached"] = engine(data, out, **part)
        print("engine partial, prefix cached", res["partial_cached"], flush=True)
        import core.engine.train
        limit, core.engine.train.PREFIX_CACHE_MAX_BYTES = core.engine.train.PREFIX_CACHE_MAX_BYTES, 0
        try:
            res["partial_plain"] = engine(data, out, **part)
        finally:
            core.engine.train.PREFIX_CACHE_MAX_BYTES = limit
        print("engine partial, prefix run every step", res["partial_plain"], flush=True)
    report(res, args)
    return res


def report(r: dict, args: argparse.Namespace) -> None:
    tut25 = r["tut_frozen"]["wall"] / args.tutorial_epochs * 25
    rows = [("tutorial, 25 frozen epochs (scaled)", tut25, r["tut_frozen"]["best"]),
            ("engine probe, first run (exports the ONNX model)", r["probe"]["wall"], r["probe"]["acc"]),
            ("engine probe, new data (ONNX model cached), median", r["probe_new_data"]["wall"],
             r["probe_new_data"]["acc"]),
            ("engine probe, warm cache, median", r["probe_warm"]["wall"], r["probe_warm"]["acc"]),
            (f"forward-only reference ({r['fwd_ref']['best']}), median", r["fwd_ref"]["seconds"], float("nan")),
            (f"forward-only reference, torch eager ({r['fwd_ref']['eager_best']})", r["fwd_ref"]["eager_seconds"],
             float("nan"))]
    if "full" in r:
        rows += [(f"tutorial full fine-tune, s/epoch ({args.epochs} epochs)", r["tut_full"]["epoch_s"],
                  r["tut_full"]["final"]),
                 (f"engine full fine-tune, s/epoch ({args.epochs} epochs), median", r["full"]["epoch_s"],
                  r["full"]["final"]),
                 ("fwd+bwd + fwd reference, s/epoch, median", r["step_ref"]["epoch_s"], float("nan")),
                 (f"engine partial, no augmentation, prefix cached, s/epoch ({args.epochs} epochs)",
                  r["partial_cached"]["epoch_s"], r["partial_cached"]["final"]),
                 ("engine partial, no augmentation, prefix run every step, s/epoch", r["partial_plain"]["epoch_s"],
                  r["partial_plain"]["final"])]
    print("\n| what | seconds | val acc |\n|---|---|---|")
    for name, sec, acc in rows:
        print(f"| {name} | {sec:.2f} | {acc:.3f} |")
    print("\n| ratio | value | target |\n|---|---|---|")
    print(f"| tutorial 25 frozen epochs / engine probe | {tut25 / r['probe']['wall']:.1f}x | >= 40x |")
    print(f"| engine probe / forward reference | {r['probe']['wall'] / r['fwd_ref']['seconds']:.2f}x | <= 1.3x |")
    print(f"| engine probe, new data / forward reference | "
          f"{r['probe_new_data']['wall'] / r['fwd_ref']['seconds']:.2f}x | <= 1.3x |")
    print(f"| engine probe, new data / torch eager forward reference | "
          f"{r['probe_new_data']['wall'] / r['fwd_ref']['eager_seconds']:.2f}x | <= 1.3x |")
    print(f"| warm probe run | {r['probe_warm']['wall']:.2f} s | < 2 s |")
    if "full" in r:
        print(f"| engine full epoch / compute reference | {r['full']['epoch_s'] / r['step_ref']['epoch_s']:.2f}x"
              f" | <= 1.15x |")
        print(f"| tutorial full epoch / engine full epoch | {r['tut_full']['epoch_s'] / r['full']['epoch_s']:.2f}x"
              f" | >= 1.4x |")
        print(f"| accuracy after {args.epochs} epochs: engine - tutorial (final) | "
              f"{r['full']['final'] - r['tut_full']['final']:+.3f} | >= 0 |")
        print(f"| partial epoch, prefix run every step / prefix cached | "
              f"{r['partial_plain']['epoch_s'] / r['partial_cached']['epoch_s']:.2f}x | - |")
        print(f"| partial whole run ({args.epochs} epochs, decode and prefix pass included), uncached / cached | "
              f"{r['partial_plain']['wall'] / r['partial_cached']['wall']:.2f}x | - |")


def run_decode(args: argparse.Namespace) -> None:
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


def run_memory(args: argparse.Namespace) -> None:
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


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--epochs", type=int, default=3, help="full fine-tuning epochs, engine and tutorial")
    p.add_argument("--tutorial-epochs", type=int, default=3, help="frozen tutorial epochs timed (scaled to 25)")
    p.add_argument("--batch", type=int, default=16, help="training batch of the engine and of the reference")
    p.add_argument("--probe-epochs", type=int, default=20, help="head epochs on cached features (~25 ms each)")
    p.add_argument("--repeats", type=int, default=3, help="probe runs and forward references alternated (medians)")
    p.add_argument("--probe-only", action="store_true")
    p.add_argument("--memory", action="store_true", help="peak-memory run on synthetic images instead")
    p.add_argument("--memory-images", type=int, default=20000)
    p.add_argument("--decode", action="store_true", help="decode paths and a probe run taken apart instead")
    p.add_argument("--json", help="also write the raw results here")
    args = p.parse_args()
    if args.memory:
        run_memory(args)
        return
    if args.decode:
        run_decode(args)
        return
    res = run_speed(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
