"""`python -m core plan`, `backbones` and `lr-find`: what to train before training it (the advisor's ranking and
settings, the backbone catalogue with CPU latency, a learning-rate range test)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from core.cli.console import print_advice, show_progress
from core.config import TrainConfig


def cmd_plan(args: argparse.Namespace) -> int:
    from core.data.multitask import single_task_view
    from core.plan.advisor import advise
    t0 = time.perf_counter()
    cfg = TrainConfig(data=args.data, budget_min=args.budget_min, **({"backbone": args.backbone} if args.backbone
                                                                    else {}))
    ds = single_task_view(cfg)
    advice = advise(cfg, ds, progress=None if args.json else show_progress, rank_all=True)  # every offline backbone
    print_advice(advice.paragraph, quiet=args.json)
    if args.json:
        print(json.dumps({"ranking": [dataclasses.asdict(r) for r in advice.ranking],
                          "settings": {k: v for k, v in advice.config.to_dict().items()
                                       if v != getattr(cfg, k) or k in ("freeze", "epochs", "img_size")},
                          "reasons": advice.reasons, "estimate": dataclasses.asdict(advice.estimate),
                          "seconds": round(time.perf_counter() - t0, 1)}, indent=2))
        return 0
    print(f"{'backbone':<24}{'params':>8}{'input':>7}{'probe accuracy (5-fold)':>25}")
    for r in advice.ranking:
        print(f"{r.backbone:<24}{r.params_m:>7.1f}M{r.input_size:>6}px{r.probe_accuracy:>24.1%}")
    c = advice.config
    print(f"\nchosen: freeze {c.freeze}, backbone {c.backbone}, img_size {c.img_size or 'native'}, epochs {c.epochs}, "
          f"lr {c.lr:g}\nestimate: {advice.estimate.describe()}\nplanned in {time.perf_counter() - t0:.1f} s")
    print(f"train it: python -m core train --data {args.data} --freeze {c.freeze} --epochs {c.epochs}"
          + (f" --img-size {c.img_size}" if c.img_size else "") + (f" --lr {c.lr:g}" if c.lr != cfg.lr else ""))
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from core.models.backbones import CATALOGUE
    from core.plan.latency import catalogue_rows, measure_latency
    if args.measure:
        names = tuple(b.name for b in CATALOGUE if args.all or "bundled" in b.weight_sources)
        measure_latency(names, progress=show_progress)
        sys.stderr.write("\n")
    rows = catalogue_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'backbone':<24}{'params':>8}{'input':>7}{'offline':>9}{'CPU ms/image':>14}")
    for r in rows:
        ms = f"{r['CPU ms/image']:.1f}" if r["CPU ms/image"] is not None else "-"
        print(f"{r['backbone']:<24}{r['params (M)']:>7.1f}M{r['input (px)']:>5}px{'yes' if r['offline'] else 'no':>9}"
              f"{ms:>14}")
    if not any(r["CPU ms/image"] for r in rows):
        print("\nCPU latency not measured on this machine yet: python -m core backbones --measure")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from core.data.dataset import extract_dir_for, open_dataset
    from core.plan.lr_finder import find_lr
    cfg = (TrainConfig.load(args.config) if args.config else TrainConfig()).replace(data=args.data)
    ds = open_dataset(cfg.data, cfg.val_fraction, cfg.seed, extract_dir_for(cfg.output_dir))
    found = find_lr(cfg, ds, progress=None if args.json else show_progress)
    if args.json:
        print(json.dumps(dataclasses.asdict(found)))
    else:
        print(f"\n{found.describe()}\nuse it: python -m core train --data {args.data} --lr {found.suggestion:.1e}")
    return 0
