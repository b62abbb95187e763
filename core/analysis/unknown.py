"""The unknown-input ("none of these") score: how unlike the training images an image is, from the model's own
outputs, higher = more unlike. Fitted at the end of a run on the training images' pooled features; its threshold
is set on the validation images so that ACCEPT of them are accepted (the rest are flagged as unknown).

Methods (bench/unknown.py measures them on every dev set; DEFAULT_METHOD is the best on average):
- knn: distance to the k-th nearest training image, features L2-normalised (Sun et al. 2022, "Out-of-distribution
  detection with deep nearest neighbors");
- mahalanobis: the smallest Mahalanobis distance to a class mean, one shared covariance (Lee et al. 2018), made
  stable by Ledoit-Wolf shrinkage (scikit-learn);
- energy: -logsumexp(logits) (Liu et al. 2020);
- max_softmax: minus the largest calibrated class probability (Hendrycks & Gimpel 2017), the usual baseline.

The scorer is a torch module of (logits, pooled features) with its fitted tensors as buffers, so the bundle, the
predict command and the ONNX export run the very same computation; it is saved as FILE beside the bundle's weights
(timm ignores the file).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

METHODS = ("knn", "mahalanobis", "energy", "max_softmax")
DEFAULT_METHOD = "knn"  # bench/unknown.py: best mean AUROC over the six dev sets (docs/measurements.md)
KNN_K = 1  # bench/unknown.py: k = 1 had the best mean AUROC (0.866 over far and near rows; k = 5: 0.843, k = 20: 0.827)
ACCEPT = 0.95  # share of validation images the threshold accepts
MAX_BANK = 2000  # training images kept for knn (a seeded sample beyond that): the file stays a few MB
FILE = "unknown.safetensors"
MEANING = ("An image whose unknown score is above the threshold is flagged as looking unlike the training images "
           "(\"none of these\"); the threshold accepts {accept:.0%} of the validation images, so about "
           "{reject:.0%} of images like the training ones are flagged too. The closest class is still reported.")


class UnknownScore(nn.Module):
    """(logits, pooled features) -> (score, flagged): score higher = more unlike the training images, flagged =
    score > threshold."""

    def __init__(self, method: str, threshold: float = math.inf, temperature: float = 1.0, k: int = KNN_K,
                 bank: torch.Tensor | None = None, means: torch.Tensor | None = None,
                 precision: torch.Tensor | None = None):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"Unknown-input method '{method}' is not one of {', '.join(METHODS)}.")
        self.method, self.temperature, self.k = method, float(temperature), int(k)
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        for name, value in (("bank", bank), ("means", means), ("precision", precision)):
            self.register_buffer(name, value.float().contiguous() if value is not None else None)

    def score(self, logits: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        if self.method == "max_softmax":
            return -(logits.float() / self.temperature).softmax(-1).max(-1).values
        if self.method == "energy":
            return -torch.logsumexp(logits.float(), -1)
        x = pooled.float()
        if self.method == "knn":
            # the bank is stored normalised; x / |x| rather than F.normalize, whose Expand op defeats ONNX Runtime's
            # shape inference (int8 quantization)
            sim = (x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)) @ self.bank.T
            kth = sim.topk(min(self.k, self.bank.shape[0]), dim=-1).values[:, -1]
            return (2 - 2 * kth).clamp(min=0).sqrt()
        xp = x @ self.precision  # (x - m)' P (x - m) for every class mean m, without an N x C x D tensor
        mpm = ((self.means @ self.precision) * self.means).sum(-1)
        d = (xp * x).sum(-1, keepdim=True) - 2 * xp @ self.means.T + mpm
        return d.min(-1).values.clamp(min=0)

    def forward(self, logits: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.score(logits, pooled)
        return s, s > self.threshold

    def describe(self) -> dict:
        """What the summary and the card say about it."""
        return {"method": self.method, "threshold": float(self.threshold), "accept": ACCEPT,
                "k": self.k if self.method == "knn" else None}


def fit_scorer(method: str, train_pooled: np.ndarray, train_labels: np.ndarray, num_classes: int,
               temperature: float = 1.0, k: int = KNN_K, seed: int = 0) -> UnknownScore:
    """The scorer's tensors from the training images' pooled features (N x D) and labels; no threshold yet."""
    x = np.asarray(train_pooled, dtype=np.float64)
    if method == "knn":
        if len(x) > MAX_BANK:
            x = x[np.sort(np.random.default_rng(seed).choice(len(x), MAX_BANK, replace=False))]
        bank = F.normalize(torch.from_numpy(x).float(), dim=-1).half()  # stored half: the same values everywhere
        return UnknownScore(method, temperature=temperature, k=k, bank=bank.float())
    if method == "mahalanobis":
        from sklearn.covariance import LedoitWolf
        means = np.stack([x[train_labels == c].mean(0) if (train_labels == c).any() else np.full(x.shape[1], 1e6)
                          for c in range(num_classes)])
        centred = x - means[train_labels]
        precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        return UnknownScore(method, temperature=temperature, means=torch.from_numpy(means),
                            precision=torch.from_numpy(precision))
    return UnknownScore(method, temperature=temperature)


def accept_threshold(val_scores: np.ndarray, accept: float = ACCEPT) -> float:
    """The score below which `accept` of the validation images fall: the midpoint between the last accepted and
    the first rejected score, so no validation image sits on the threshold (an export's rounding cannot flip it)."""
    s = np.sort(np.asarray(val_scores, dtype=np.float64))
    if len(s) == 0:
        return math.inf
    keep = min(len(s), max(1, math.ceil(accept * len(s))))
    return float(s[-1] + 1e-6 * (abs(s[-1]) + 1)) if keep == len(s) else float((s[keep - 1] + s[keep]) / 2)


@torch.inference_mode()
def scores(scorer: UnknownScore, logits: np.ndarray | torch.Tensor, pooled: np.ndarray | torch.Tensor,
           batch: int = 512) -> np.ndarray:
    """The scores of many images (numpy in, numpy out), in batches."""
    logits, pooled = torch.as_tensor(logits).float(), torch.as_tensor(pooled).float()
    out = [scorer.score(logits[i:i + batch], pooled[i:i + batch]) for i in range(0, len(logits), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def fit_unknown(train_pooled: np.ndarray, train_labels: np.ndarray, num_classes: int, val_logits: np.ndarray,
                val_pooled: np.ndarray, temperature: float = 1.0, method: str = DEFAULT_METHOD,
                seed: int = 0) -> UnknownScore:
    """Fit on the training features, then threshold on the validation images (ACCEPT of them accepted)."""
    scorer = fit_scorer(method, train_pooled, train_labels, num_classes, temperature, seed=seed)
    scorer.threshold.fill_(accept_threshold(scores(scorer, val_logits, val_pooled)))
    return scorer


def save_scorer(scorer: UnknownScore, path: Path) -> None:
    from safetensors.torch import save_file
    tensors = {k: v.contiguous() for k, v in scorer.state_dict().items() if v is not None}
    meta = {"method": scorer.method, "temperature": repr(scorer.temperature), "k": str(scorer.k),
            "accept": repr(ACCEPT)}
    save_file(tensors, str(path), metadata=meta)


def load_scorer(path: Path) -> UnknownScore | None:
    """The scorer saved beside a bundle's weights, or None when the bundle has none (older runs, multi-task)."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    scorer = UnknownScore(meta["method"], float(tensors.pop("threshold")), float(meta.get("temperature", 1.0)),
                          int(meta.get("k", KNN_K)), **tensors)
    return scorer.eval()


def histogram(values: np.ndarray, bins: int = 30, edges: np.ndarray | None = None) -> dict:
    """Counts and bin edges (JSON-ready) for the Inspect page's score histogram."""
    counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=edges if edges is not None else bins)
    return {"counts": counts.tolist(), "edges": edges.tolist()}


def to_json(scorer: UnknownScore) -> str:
    return json.dumps(scorer.describe())
