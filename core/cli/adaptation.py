"""`python -m core adapt`: self-supervised adaptation of a backbone on unlabeled images, into weights that
`train --weights` starts from."""

from __future__ import annotations

import argparse
import sys

from core.cli.console import ProgressBar
from core.config import TrainConfig


def cmd_adapt(args: argparse.Namespace) -> int:
    """Self-supervised adaptation into an adapted-weights run; prints the probe before/after and the weights file."""
    from core.engine.adapt import adapt
    flags = {"data": args.data, "unlabeled": args.unlabeled, "adapt_objective": args.objective,
             "adapt_from": args.start, "adapt_epochs": args.epochs, "output_dir": args.out,
             "backbone": args.backbone, "weights": args.weights, "img_size": args.img_size,
             "batch_size": args.batch_size, "lr": args.lr}
    base = TrainConfig.load(args.config).to_dict() if args.config else {}
    cfg = TrainConfig.from_dict({**base, **{k: v for k, v in flags.items() if v is not None}})
    result = adapt(cfg, [] if args.quiet else [ProgressBar()])
    info = result.adaptation
    sys.stderr.write("\n")
    print(f"run: {result.run_dir}\nstatus: {result.status}")
    if info.get("probe_before") is not None:
        after = f"{info['probe_after']:.4f}" if info.get("probe_after") is not None else "-"
        print(f"probe_accuracy_before: {info['probe_before']:.4f}  after: {after}  "
              f"({info['probe_images']} labeled images, 5-fold linear probe)")
    print(f"loss per epoch: {', '.join(f'{v:.4f}' for v in info.get('loss_per_epoch', []))}")
    if result.weights:
        print(f"weights: {result.weights}\ntrain from them: python -m core train --data {args.data} "
              f"--backbone {cfg.backbone} --weights {result.weights}" + (f" --img-size {cfg.img_size}"
                                                                          if cfg.img_size else ""))
    return 0 if result.status in ("completed", "stopped") else 1
