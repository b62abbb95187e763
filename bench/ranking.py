"""Does the backbone ranking predict the fine-tuned order? One fixed fine-tuning recipe per offline backbone on
each dataset, against the ranking's cross-validated probe accuracy; Spearman and Kendall rank correlations.

    python -m bench.ranking                      # the four dev sets in ../shared/datasets, 4 partial epochs
    python -m bench.ranking --epochs 8 --out /tmp/ranking.json DATA [DATA ...]

The recipe is the advisor's own fine-tuning choice (partial, its input-size rule) with the same epochs for every
backbone, so the order compares backbones, not settings. Accuracy is the delivered (best-epoch) validation
accuracy. Times are context only (machines drift); the correlations are the result.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from itertools import combinations
from pathlib import Path

from scipy.stats import kendalltau, spearmanr

from core.config import TrainConfig
from core.data.dataset import open_dataset
from core.engine.train import train
from core.models.backbones import OFFLINE
from core.plan.advisor import _input_size
from core.plan.ranking import rank_backbones

ROOT = Path(__file__).resolve().parents[1]
DEV_SETS = ("hymenoptera", "rsscn7", "magnetic_tile", "pbc_blood")


def measure(data: Path, epochs: int, out_dir: Path) -> dict:
    cfg = TrainConfig(data=str(data), freeze="partial", epochs=epochs, output_dir=str(out_dir))
    ds = open_dataset(cfg.data, cfg.val_fraction, cfg.seed)
    ranking = {s.backbone: s.probe_accuracy for s in rank_backbones(ds, cfg)}
    rows = []
    for name in OFFLINE:
        run_cfg, _ = _input_size(cfg.replace(backbone=name), ds)
        t0 = time.perf_counter()
        result = train(run_cfg)
        rows.append({"backbone": name, "img_size": run_cfg.img_size, "probe_cv": ranking[name],
                     "finetuned_val": result.summary.val_accuracy, "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps({"data": data.name, **rows[-1]}), flush=True)
    probe, tuned = [r["probe_cv"] for r in rows], [r["finetuned_val"] for r in rows]
    best_probe = max(rows, key=lambda r: r["probe_cv"])["backbone"]
    best_tuned = max(rows, key=lambda r: r["finetuned_val"])["backbone"]
    return {"data": data.name, "rows": rows, "spearman": _num(spearmanr(probe, tuned).statistic),
            "kendall": _num(kendalltau(probe, tuned).statistic), "top1_agrees": best_probe == best_tuned,
            "pairs": [(a, b) for a, b in combinations(range(len(rows)), 2)], "probe": probe, "tuned": tuned}


def _num(x: float) -> float | None:
    return None if x != x else round(float(x), 3)  # NaN (a tie everywhere) -> None


def concordance(results: list[dict]) -> tuple[int, int]:
    """Pairs of backbones within a dataset that the ranking orders like fine-tuning (ties count as neither)."""
    agree = total = 0
    for r in results:
        for i, j in r["pairs"]:
            dp, dt = r["probe"][i] - r["probe"][j], r["tuned"][i] - r["tuned"][j]
            if dp and dt:
                total += 1
                agree += (dp > 0) == (dt > 0)
    return agree, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="*", type=Path,
                    default=[ROOT.parent / "shared" / "datasets" / d for d in DEV_SETS])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ranking-") as tmp:
        results = [measure(d, args.epochs, Path(tmp)) for d in args.data]
    agree, total = concordance(results)
    print("\n| dataset | " + " | ".join(f"{b} probe CV / fine-tuned" for b in OFFLINE) + " | Spearman | Kendall |")
    print("|---|" + "---|" * (len(OFFLINE) + 2))
    for r in results:
        cells = " | ".join(f"{x['probe_cv']:.1%} / {x['finetuned_val']:.1%}" for x in r["rows"])
        print(f"| {r['data']} | {cells} | {r['spearman']} | {r['kendall']} |")
    print(f"\nPairs ordered alike: {agree} of {total}; best backbone predicted on "
          f"{sum(r['top1_agrees'] for r in results)} of {len(results)} sets.")
    if args.out:
        args.out.write_text(json.dumps({"epochs": args.epochs, "results": results,
                                        "concordant_pairs": [agree, total]}, indent=2))


if __name__ == "__main__":
    main()
