"""The unknown-input score's methods on every dev set, against two kinds of unknowns: *far* (the validation images
of the other dev sets) and *near* (leave one class out: the head and the score are fitted on the other classes, the
left-out class's validation images are the unknowns; sets with two classes have no near row, one class is left).

    python -m bench.unknown                       # the six dev sets in ../shared/datasets
    python -m bench.unknown --out /tmp/unknown.json DATA [DATA ...]

A probe on the default backbone's cached pretrained features (a logistic head, scikit-learn) stands in for a run:
the score is fitted the way the end of a run fits it (core/analysis/unknown.py), on the training features, with the
threshold accepting 95% of the in-distribution validation images. Per method: AUROC (unknown vs validation) and the
share of unknowns caught at that threshold. Seconds per set once the features are cached.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from core.analysis.unknown import METHODS, accept_threshold, fit_scorer, scores
from core.config import TrainConfig
from core.data.dataset import open_dataset
from core.models.features import pretrained_features

ROOT = Path(__file__).resolve().parents[1]
DEV_SETS = ("hymenoptera", "rsscn7", "magnetic_tile", "pbc_blood", "cifar10", "flowers17")
VARIANTS = {"knn k=1": ("knn", 1), "knn k=5": ("knn", 5), "knn k=20": ("knn", 20),
            "mahalanobis": ("mahalanobis", 0), "energy": ("energy", 0), "max_softmax": ("max_softmax", 0)}
assert {m for m, _ in VARIANTS.values()} == set(METHODS)


def features(data: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (pooled features N x D, labels) of the default backbone, pretrained, from the machine's cache."""
    cfg = TrainConfig(data=str(data), freeze="probe")
    ds = open_dataset(cfg.data, cfg.val_fraction, cfg.seed)
    out = {}
    for split, samples in (("train", ds.train), ("val", ds.val)):
        feats, _ = pretrained_features(cfg, samples, exact=split != "train")
        keep = [(f[0], s.label) for f, s in zip(feats, samples, strict=True) if f is not None]
        out[split] = (np.stack([k[0] for k in keep]), np.array([k[1] for k in keep]))
    return out


def head_logits(x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A logistic probe on standardised features: the class scores (logits) of `rows`."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=0.5, max_iter=300).fit((x - mean) / std, y)
    z = clf.decision_function((rows - mean) / std)
    return np.stack([-z, z], 1) / 2 if z.ndim == 1 else z  # binary: the two logits that give the same softmax


def evaluate(train: tuple[np.ndarray, np.ndarray], val_x: np.ndarray, unknown_x: np.ndarray) -> dict[str, dict]:
    """Every variant fitted on `train`, thresholded on val_x: AUROC and the share of unknown_x caught."""
    x, y = train
    classes = np.unique(y)
    y = np.searchsorted(classes, y)
    logits = head_logits(x, y, np.concatenate([val_x, unknown_x]))
    pooled = np.concatenate([val_x, unknown_x])
    truth = np.r_[np.zeros(len(val_x)), np.ones(len(unknown_x))]
    out = {}
    for name, (method, k) in VARIANTS.items():
        scorer = fit_scorer(method, x, y, len(classes), k=k or 5)
        s = scores(scorer, logits, pooled)
        threshold = accept_threshold(s[:len(val_x)])
        out[name] = {"auroc": float(roc_auc_score(truth, s)), "caught": float((s[len(val_x):] > threshold).mean())}
    return out


def mean_of(rows: list[dict[str, dict]]) -> dict[str, dict]:
    return {v: {m: float(np.mean([r[v][m] for r in rows])) for m in ("auroc", "caught")} for v in VARIANTS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="*", type=Path, default=[ROOT.parent / "shared" / "datasets" / d for d in DEV_SETS])
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    feats = {d.name: features(d) for d in args.data}
    results = {}
    for name, f in feats.items():
        far = np.concatenate([g["val"][0] for other, g in feats.items() if other != name])
        results[name] = {"far": evaluate(f["train"], f["val"][0], far)}
        classes = np.unique(f["train"][1])
        if len(classes) > 2:  # leave each class out in turn; the mean over them
            (tx, ty), (vx, vy) = f["train"], f["val"]
            results[name]["near"] = mean_of([evaluate((tx[ty != c], ty[ty != c]), vx[vy != c], vx[vy == c])
                                             for c in classes])
        print(json.dumps({"data": name, **results[name]}), flush=True)
    table(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


def table(results: dict[str, dict]) -> None:
    print("\nAUROC / share of unknowns caught at 95% acceptance of validation images\n")
    print("| dataset | unknowns | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---|" * len(VARIANTS))
    for kind in ("far", "near"):
        rows = [(name, r[kind]) for name, r in results.items() if kind in r]
        for name, r in rows + [("**mean**", mean_of([r for _, r in rows]))]:
            print(f"| {name} | {kind} | " + " | ".join(f"{r[v]['auroc']:.3f} / {r[v]['caught']:.0%}" for v in VARIANTS)
                  + " |")
    every = [r[k] for r in results.values() for k in ("far", "near") if k in r]
    print("| **mean of all rows** | both | " + " | ".join(f"{m['auroc']:.3f} / {m['caught']:.0%}"
                                                      for m in mean_of(every).values()) + " |")


if __name__ == "__main__":
    main()
