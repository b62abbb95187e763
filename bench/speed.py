"""Speed benchmark: this engine vs. bare references and the PyTorch tutorial way, in one run, as ratios.

    python -m bench.speed           # on the ants/bees sample data (`python -m bench`)

The issue-22 bars, side by side: (a) a whole `python -m core train --data DATA --freeze probe` process on an
empty machine cache vs a bare process that decodes the same images and runs the backbone forward over them
(bench/bare_forward.py: PIL, timm, torch, no engine code); (b) the engine's full fine-tuning epoch vs pure
forward+backward compute on random tensors (bench/references.py); (c) the same probe repeated into another output
folder: the process's own time after its imports (bench/timed_cli.py, which also splits each probe process into
phases, wall and CPU seconds). Everything runs on the same machine in the same run, so only the ratios matter
(machines of one kind differ by 1.5x). The tutorial baseline follows PyTorch's transfer-learning tutorial:
ImageFolder, PIL transforms, DataLoader with 2 workers, batch 4, SGD(0.001, momentum 0.9), StepLR(7, 0.1),
backbone run forward every epoch even when frozen. The tutorial's frozen epochs are timed for --tutorial-epochs
and scaled to 25.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench.references import train_step_reference

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "hymenoptera"


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the modes that train on a dataset (speed, decode)."""
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--probe-epochs", type=int, default=20, help="head epochs on cached features (~25 ms each)")
    p.add_argument("--repeats", type=int, default=3, help="probe processes and references alternated (medians)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_flags(p)
    p.add_argument("--epochs", type=int, default=3, help="full fine-tuning epochs, engine and tutorial")
    p.add_argument("--tutorial-epochs", type=int, default=3, help="frozen tutorial epochs timed (scaled to 25)")
    p.add_argument("--batch", type=int, default=16, help="training batch of the engine and of the reference")
    p.add_argument("--probe-only", action="store_true")
    p.add_argument("--json", help="also write the raw results here")


def run(args: argparse.Namespace) -> None:
    res = run_speed(args)
    if args.json:  # before the tables: the raw results survive a mistake in them
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    report(res, args)


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

def probe_process(data: Path, out: Path, cache: Path) -> dict:
    """`python -m core train --data DATA --freeze probe` as a process of its own (bench/timed_cli.py notes its
    phases), into `out`, with `cache` as the machine cache: wall and CPU seconds, phases, validation accuracy."""
    timing = out.with_suffix(".timing.json")
    got = _process([sys.executable, "-m", "bench.timed_cli", str(timing), "train", "--data", str(data),
                    "--freeze", "probe", "--output-dir", str(out), "--quiet"], cache)
    summary = json.loads(next(out.glob("*/summary.json")).read_text())
    return {**got, "phases": json.loads(timing.read_text()), "acc": summary["val"]["accuracy"]}


def bare_process(data: Path) -> dict:
    """The bare reference process (bench/bare_forward.py): decode + torch forward pass over the same images."""
    got = _process([sys.executable, "-m", "bench.bare_forward", str(data)], None)
    return {**got, "parts": json.loads(got.pop("stdout").strip().splitlines()[-1])}


def _process(cmd: list[str], cache: Path | None) -> dict:
    """Run cmd from the repository root (so `core` is this checkout): wall seconds seen from here, CPU seconds of
    the process and its threads (rusage of children), stdout."""
    env = {**os.environ, **({"TRANSFERLAB_CACHE": str(cache)} if cache else {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall": wall, "cpu": cpu, "stdout": done.stdout}


def run_speed(args: argparse.Namespace) -> dict:
    from core.device import set_threads
    threads = set_threads(0)
    data = Path(args.data)
    out = Path(tempfile.mkdtemp(prefix="bench-runs-"))
    os.environ["TRANSFERLAB_CACHE"] = str(out / "_cache")  # the in-process runs below: a cache of their own
    res = {"machine": f"{platform.processor() or platform.machine()} ({_cpu_name()}), {threads} threads",
           "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    print(f"# bench {res['date']} on {res['machine']}, torch {res['torch']}", flush=True)
    # whole processes, alternated (this VM's speed drifts by +-15% within a minute), medians of N: a probe on an
    # empty machine cache (exports the ONNX model), the bare reference, then the same probe into another output
    # folder (features, ONNX model and fingerprints cached)
    cold, bare, repeat = [], [], []
    for r in range(args.repeats):
        cache = out / f"_machine_cache{r}"
        cold.append(probe_process(data, out / f"cold{r}", cache))
        print("probe process, empty cache", _brief(cold[-1]), flush=True)
        bare.append(bare_process(data))
        print("bare reference process", _brief(bare[-1]), flush=True)
        repeat.append(probe_process(data, out / f"repeat{r}", cache))
        print("probe process, repeat into another output folder", _brief(repeat[-1]), flush=True)
    res["cold"], res["bare"] = _median(cold, "wall"), _median(bare, "wall")
    res["repeat"] = sorted(repeat, key=lambda r: r["phases"]["after_imports"][0])[len(repeat) // 2]
    res["tut_frozen"] = tutorial(data, args.tutorial_epochs, frozen=True)
    print("tutorial frozen", res["tut_frozen"], flush=True)
    if not args.probe_only:
        from core.data.dataset import open_dataset
        counts = {split: sum(n.values()) for split, n in open_dataset(data).counts().items()}
        full, step = [], []
        for _ in range(args.repeats):  # alternated like the processes: medians of N
            full.append(engine(data, out, freeze="full", epochs=args.epochs, early_stopping=0,
                               batch_size=args.batch))
            print("engine full", full[-1], flush=True)
            step.append(train_step_reference(counts["train"], counts["val"], batch=args.batch))
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
    return res


def _brief(r: dict) -> str:
    parts = r.get("phases") or r.get("parts")
    return (f"wall {r['wall']:.2f} s, cpu {r['cpu']:.2f} s; " +
            ", ".join(f"{k} {v[0] if isinstance(v, list) else v:.2f}" for k, v in parts.items()))


def report(r: dict, args: argparse.Namespace) -> None:
    cold, bare, rep = r["cold"], r["bare"], r["repeat"]
    tut25 = r["tut_frozen"]["wall"] / args.tutorial_epochs * 25
    print("\n| process | wall s | CPU s | val acc |\n|---|---|---|---|")
    print(f"| probe process, empty machine cache (`python -m core train --data DATA --freeze probe`), median | "
          f"{cold['wall']:.2f} | {cold['cpu']:.2f} | {cold['acc']:.3f} |")
    for name, (wall, cpu) in cold["phases"].items():
        if name not in ("after_imports", "total"):
            print(f"| - {name} | {wall:.2f} | {cpu:.2f} | |")
    print(f"| bare reference process: decode + torch forward, {bare['parts']['images']} images "
          f"(bench/bare_forward.py), median | {bare['wall']:.2f} | {bare['cpu']:.2f} | - |")
    for name in ("imports", "model", "decode", "forward"):
        print(f"| - {name} | {bare['parts'][name]:.2f} | | |")
    print(f"| probe process, repeat into another output folder (cache warm), median | {rep['wall']:.2f} | "
          f"{rep['cpu']:.2f} | {rep['acc']:.3f} |")
    for name, (wall, cpu) in rep["phases"].items():
        if name != "total":
            print(f"| - {name} | {wall:.2f} | {cpu:.2f} | |")
    rows = [(f"tutorial, 25 frozen epochs ({args.tutorial_epochs} timed, scaled; in-process: no imports)", tut25,
             r["tut_frozen"]["best"])]
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
    print("\n| in one process | seconds | val acc |\n|---|---|---|")
    for name, sec, acc in rows:
        print(f"| {name} | {sec:.2f} | {acc:.3f} |")
    print("\n| ratio | value | target |\n|---|---|---|")
    print(f"| (a) probe process, empty cache / bare reference process (wall; CPU) | {cold['wall'] / bare['wall']:.2f}x;"
          f" {cold['cpu'] / bare['cpu']:.2f}x | <= 1.0x |")
    if "full" in r:
        print(f"| (b) engine full epoch / compute reference | {r['full']['epoch_s'] / r['step_ref']['epoch_s']:.2f}x"
              f" | <= 1.0x |")
    print(f"| (c) probe repeat into another output folder, after its imports | "
          f"{rep['phases']['after_imports'][0]:.2f} s | <= 1.5 s |")
    print(f"| tutorial 25 frozen epochs / probe process, empty cache | {tut25 / cold['wall']:.1f}x | - |")
    if "full" in r:
        print(f"| tutorial full epoch / engine full epoch | {r['tut_full']['epoch_s'] / r['full']['epoch_s']:.2f}x"
              f" | >= 1.4x |")
        print(f"| accuracy after {args.epochs} epochs: engine - tutorial (final) | "
              f"{r['full']['final'] - r['tut_full']['final']:+.3f} | >= 0 |")
        print(f"| partial epoch, prefix run every step / prefix cached | "
              f"{r['partial_plain']['epoch_s'] / r['partial_cached']['epoch_s']:.2f}x | - |")


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
