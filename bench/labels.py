"""How many labels do suggestions save? Active-learning rounds on a dev set whose training labels are hidden.

    python -m bench.labels                                   # all six dev sets, budgets 3 and 10, 3 seeds
    python -m bench.labels hymenoptera --budgets 3 --seeds 1 --out /tmp/labels.json
    python -m bench.labels --tables /tmp/a.json /tmp/b.json     # the tables of runs made apart, together

Per dataset, seed and budget B: B labeled training images per class to start (seeded), the rest of the training
set is the unlabeled pool. Each round trains the probe (core/analysis/suggest.fit_probe, a ridge classifier on the
cached pretrained features of the default backbone), measures its validation accuracy, then asks for 2 labels per
class (2 x classes images) by each method (or at random), reveals their labels and trains again. The same labeled
sets are also scored with self-training: the probe's pool images above PSEUDO_THRESHOLD confidence join the
training set with the predicted label (pseudo-labels), and the probe is fitted again. Suggestions use the
labeled-only probe in both cases, so the two columns differ only in the final fit.

"Labels to reach random" is the number of labels each method needs (mean of the seeds) to reach random choice's
accuracy after the last round, against the labels random used; "-" when it never does within the rounds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from core.analysis.suggest import METHODS, PSEUDO_THRESHOLD, fit_probe, rank_pool
from core.config import TrainConfig
from core.data.dataset import open_dataset
from core.models.features import pretrained_features

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DEV_SETS = ("hymenoptera", "rsscn7", "pbc_blood", "magnetic_tile", "cifar10", "flowers17")
ROUNDS = 5  # labeling rounds after the start: 6 accuracies per curve
PER_ROUND = 2  # labels per class per round


def features(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Pooled features (view 0) and labels of the training and validation images, from the machine cache."""
    cfg = TrainConfig(data=str(DATASETS / name) if not Path(name).exists() else name)
    ds = open_dataset(cfg.data, cfg.val_fraction, cfg.seed)
    out = []
    for samples, exact in ((ds.train, False), (ds.val, True)):
        feats = pretrained_features(cfg, samples, exact=exact)[0]
        keep = [i for i, f in enumerate(feats) if f is not None]
        out += [np.stack([feats[i][0] for i in keep]), np.array([samples[i].label for i in keep])]
    return (*out, len(ds.classes))


def start_set(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([rng.choice(np.flatnonzero(y == c), min(per_class, int((y == c).sum())), replace=False)
                           for c in np.unique(y)])


def self_trained(x: np.ndarray, y: np.ndarray, labeled: np.ndarray, pool: np.ndarray, probs: np.ndarray,
                 classes: int):
    """The probe fitted again on the labeled images plus the pool images it labels with confidence >= threshold."""
    sure = probs.max(1) >= PSEUDO_THRESHOLD
    xs = np.concatenate([x[labeled], x[pool[sure]]])
    ys = np.concatenate([y[labeled], probs[sure].argmax(1)])
    return fit_probe(xs, ys, classes), int(sure.sum())


def curve(method: str, x, y, xv, yv, classes: int, budget: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    labeled = start_set(y, budget, rng)
    acc, acc_st, n_labels, pseudo = [], [], [], []
    for r in range(ROUNDS + 1):
        probe = fit_probe(x[labeled], y[labeled], classes)
        pool = np.setdiff1d(np.arange(len(x)), labeled)
        both = probe(np.concatenate([xv, x[pool]]))
        probs = both[len(xv):]
        acc.append(float((both[:len(xv)].argmax(1) == yv).mean()))
        st_probe, n = self_trained(x, y, labeled, pool, probs, classes)
        acc_st.append(float((st_probe(xv).argmax(1) == yv).mean()))
        n_labels.append(len(labeled))
        pseudo.append(n)
        if r == ROUNDS:
            break
        k = min(PER_ROUND * classes, len(pool))
        if method == "random":
            picks = rng.choice(pool, k, replace=False)
        else:
            order, _, picked, _ = rank_pool(method, x[labeled], y[labeled], x[pool], classes, k, seed, probs)
            picks = pool[order[:picked]]
        labeled = np.concatenate([labeled, picks])  # their labels are revealed: y[picks]
    return {"acc": acc, "acc_self_training": acc_st, "labels": n_labels, "pseudo_labels": pseudo}


def labels_to_reach(target: float, acc: list[float], labels: list[int]) -> int | None:
    return next((n for a, n in zip(acc, labels, strict=True) if a >= target - 1e-9), None)


def measure(name: str, budgets: list[int], seeds: int, methods: list[str]) -> dict:
    x, y, xv, yv, classes = features(name)
    out = {"data": Path(name).name, "classes": classes, "train": len(y), "val": len(yv), "budgets": {}}
    for budget in budgets:
        rows = {}
        for method in ["random", *methods]:
            t0 = time.perf_counter()
            runs = [curve(method, x, y, xv, yv, classes, budget, s) for s in range(seeds)]
            rows[method] = {key: np.mean([r[key] for r in runs], 0).tolist() for key in runs[0]}
            rows[method]["seconds"] = round(time.perf_counter() - t0, 1)
            print(json.dumps({"data": out["data"], "budget": budget, "method": method,
                              "acc": [round(a, 4) for a in rows[method]["acc"]],
                              "acc_st": [round(a, 4) for a in rows[method]["acc_self_training"]]}), flush=True)
        target = rows["random"]["acc"][-1]
        for row in rows.values():
            row["labels_to_reach_random"] = labels_to_reach(target, row["acc"], row["labels"])
        out["budgets"][budget] = rows
    return out


def table(results: list[dict], methods: list[str]) -> str:
    lines = ["| dataset | start / class | choice | accuracy after each round (labels) | with self-training | "
             "labels to reach random's last |", "|---|---|---|---|---|---|"]
    for res in results:
        for budget, rows in res["budgets"].items():
            for method in ["random", *methods]:
                r = rows[method]
                accs = " · ".join(f"{a:.1%}" for a in r["acc"])
                st = " · ".join(f"{a:.1%}" for a in r["acc_self_training"])
                reach = r["labels_to_reach_random"]
                lines.append(f"| {res['data']} | {budget} | {method} | {accs} ({int(r['labels'][0])}→"
                             f"{int(r['labels'][-1])}) | {st} | {int(reach) if reach is not None else '-'} |")
    return "\n".join(lines)


def summary(results: list[dict], methods: list[str]) -> str:
    """Per budget and method: the mean over datasets and rounds of (method - random), with and without
    self-training, and in how many datasets it is at least as good as random on average over the rounds."""
    lines = ["| start / class | choice | mean gain over random (points, all rounds) | at least random on | "
             "self-training gain (points) |", "|---|---|---|---|---|"]
    budgets = sorted({b for r in results for b in r["budgets"]}, key=int)
    for budget in budgets:
        for method in ["random", *methods]:
            gains, st_gain, wins = [], [], 0
            for res in results:
                rows = res["budgets"][budget]
                gain = np.mean(np.array(rows[method]["acc"][1:]) - np.array(rows["random"]["acc"][1:]))
                gains.append(gain)
                wins += gain >= -1e-9
                st_gain.append(np.mean(np.array(rows[method]["acc_self_training"]) - np.array(rows[method]["acc"])))
            lines.append(f"| {budget} | {method} | {100 * np.mean(gains):+.2f} | {wins} of {len(results)} | "
                         f"{100 * np.mean(st_gain):+.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="*", default=list(DEV_SETS), help="sets in ../shared/datasets, or paths")
    ap.add_argument("--budgets", default="3,10", help="labeled images per class to start")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--tables", nargs="+", type=Path, default=None,
                    help="print the tables of earlier --out files together instead of measuring")
    args = ap.parse_args()
    budgets, methods = [int(b) for b in args.budgets.split(",")], args.methods.split(",")
    if args.tables:
        results = [r for f in args.tables for r in json.loads(f.read_text())["results"]]
        print(table(results, methods) + "\n\n" + summary(results, methods))
        return
    with threadpool_limits(1):  # BLAS / OpenMP threads only wait for each other on a busy 2-core machine
        results = [measure(d, budgets, args.seeds, methods) for d in args.data]
    print("\n" + table(results, methods) + "\n\n" + summary(results, methods))
    if args.out:
        args.out.write_text(json.dumps({"rounds": ROUNDS, "per_round": PER_ROUND, "threshold": PSEUDO_THRESHOLD,
                                        "seeds": args.seeds, "results": results}, indent=2))


if __name__ == "__main__":
    main()
