"""Speed benchmark: the PyTorch tutorial way vs. this engine vs. pure compute, in one process, as ratios.

    python -m bench.speed           # probe + full fine-tuning on the ants/bees sample data (`python -m bench`)

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
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench.references import forward_reference, train_step_reference

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hymenoptera"


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the modes that train on a dataset (speed, decode)."""
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--probe-epochs", type=int, default=20, help="head epochs on cached features (~25 ms each)")
    p.add_argument("--repeats", type=int, default=3, help="probe runs and forward references alternated (medians)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_flags(p)
    p.add_argument("--epochs", type=int, default=3, help="full fine-tuning epochs, engine and tutorial")
    p.add_argument("--tutorial-epochs", type=int, default=3, help="frozen tutorial epochs timed (scaled to 25)")
    p.add_argument("--batch", type=int, default=16, help="training batch of the engine and of the reference")
    p.add_argument("--probe-only", action="store_true")
    p.add_argument("--json", help="also write the raw results here")


def run(args: argparse.Namespace) -> None:
    res = run_speed(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))


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


def _median(runs: list[dict], key: str) -> dict:
    return sorted(runs, key=lambda r: r[key])[len(runs) // 2]

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


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.splitlines()[0])
    add_arguments(parser)
    run(parser.parse_args())
