"""Continuing a run, and fine-tuning small sets, with BatchNorm statistics frozen or re-estimated (cfg.batchnorm).

    python -m bench.continuation                       # ants/bees, rsscn7, flowers17 (../shared/datasets)
    python -m bench.continuation --sets hymenoptera --epochs 2 --regimes probe   # a quick look

Per dev set:
- fine-tuning from ImageNet with the default recipe (lr 1e-3, cosine, standard augmentation), partial and full, with
  batchnorm 'train' and 'frozen': validation accuracy after --epochs epochs. These runs are also the sources below.
- a probe source (default recipe, --epochs epochs);
- the continued run's model before any step, on the same validation images (is the source carried over exactly?);
- each source continued as the issue does it: `--init-from RUN --freeze full --lr 1e-5 --epochs 1`, with batchnorm
  'train' and 'frozen': the continued run's validation accuracy next to its source's.
Accuracy, not time, is the result; every run validates on the set's own val/ folder. Prints one JSON line per run
and the Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from core.analysis.predictions import load_predictions
from core.config import TrainConfig
from core.data.augment import Preprocessor
from core.data.dataset import Sample
from core.data.images import decode_images, geometry
from core.engine.train import train
from core.models import init_from
from core.models.backbones import data_config

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
SETS = ("hymenoptera", "rsscn7", "flowers17")
BN = ("train", "frozen")
CONTINUE = {"freeze": "full", "lr": 1e-5, "epochs": 1}  # the continuation


def run(out: Path, label: str, **kw) -> tuple[float, str]:
    cfg = TrainConfig(**{"output_dir": str(out), "early_stopping": 0, "threads": 0, **kw})
    result = train(cfg)
    acc = result.summary.val_accuracy
    print(json.dumps({"run": label, "val_acc": round(acc, 4), "run_dir": result.run_dir}), flush=True)
    return acc, result.run_dir


def rebuilt_accuracy(source: str, data: str) -> float:
    """The continued run's model before any step (the source's weights and head through init_from, in eval mode)
    on the source's validation images, decoded as training evaluates: the source's accuracy when nothing is lost
    in carrying it over (head, preprocessing, resolution)."""
    preds = load_predictions(Path(source) / "predictions.npz")
    val = preds.splits["val"]
    cfg = init_from.resolve(TrainConfig(data=data, init_from=source, freeze="full"))
    model = init_from.create_from_source(cfg, len(preds.classes), preds.classes).eval()
    data_cfg = data_config(model)
    samples = [Sample(str(Path(data) / p), int(y)) for p, y in zip(val.paths, val.labels, strict=True)]
    images, failed = decode_images(samples, *geometry(data_cfg), exact=True)
    assert not failed, failed
    pre = Preprocessor(data_cfg, torch.device("cpu"))
    with torch.inference_mode():
        logits = torch.cat([model(pre.eval_view(torch.from_numpy(images[i:i + 32])))
                            for i in range(0, len(images), 32)])
    return float((logits.argmax(1).numpy() == val.labels).mean())


def bench_set(name: str, out: Path, epochs: int, regimes: list[str], img_size: int,
              source_bn: tuple[str, ...] = BN) -> list[dict]:
    data = str(DATASETS / name)
    rows = []
    for regime in regimes:
        for bn in ("-",) if regime == "probe" else source_bn:
            extra = {} if regime == "probe" else {"batchnorm": bn}
            acc, src = run(out, f"{name} {regime} bn={bn}", data=data, freeze=regime, epochs=epochs,
                           img_size=img_size, **extra)
            row = {"set": name, "px": img_size or 224, "source": regime, "epochs": epochs, "source_bn": bn,
                   "source_acc": acc, "rebuilt": rebuilt_accuracy(src, data)}
            for cont_bn in BN:
                row[f"continued_{cont_bn}"], _ = run(out, f"{name} {regime} bn={bn} -> full 1e-5 bn={cont_bn}",
                                                     data=data, init_from=src, batchnorm=cont_bn, **CONTINUE)
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| dev set | px | source (from ImageNet) | source epochs | source BatchNorm | source acc. | "
             "carried over, before any step | continued, BN train | continued, BN frozen |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['set']} | {r['px']} | {r['source']} | {r['epochs']} | {r['source_bn']} | "
                     f"{100 * r['source_acc']:.1f}% | {100 * r['rebuilt']:.1f}% | "
                     f"{100 * r['continued_train']:.1f}% | {100 * r['continued_frozen']:.1f}% |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--regimes", nargs="+", default=["probe", "partial", "full"])
    ap.add_argument("--epochs", type=int, default=TrainConfig.__dataclass_fields__["epochs"].default,
                    help="epochs of the sources (default: the default recipe's)")
    ap.add_argument("--source-bn", nargs="+", default=list(BN), choices=BN,
                    help="BatchNorm handling of the partial and full sources (fine-tuning from ImageNet)")
    ap.add_argument("--img-size", type=int, default=0, help="input size of every run (0: the backbone's, 224 px)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-continuation-") as tmp:
        for name in args.sets:
            rows += bench_set(name, Path(tmp) / name, args.epochs, args.regimes, args.img_size,
                              tuple(args.source_bn))
    print(table(rows))


if __name__ == "__main__":
    main()
