"""Linear heads on frozen features, fitted in seconds: the transferability score of a backbone (how well a linear
probe separates the classes) and out-of-fold probabilities (an estimate for images the head never trained on).

Softmax regression with an L2 penalty, on standardised features, fitted with L-BFGS in torch (full batch: a few
thousand images x ~1,300 features fit in memory). Folds are stratified and seeded.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

L2 = 1e-3  # per-feature penalty on standardised features; chosen on ants/bees and the three dev sets (see plan/)


def fit_softmax(x: np.ndarray, y: np.ndarray, classes: int, l2: float = L2, steps: int = 100):
    """A linear classifier on x (N x D) -> (predict_proba function for new rows)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mean) / std).float()
    yt = torch.from_numpy(y).long()
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xt @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    w, b = w.detach(), b.detach()

    def predict_proba(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return F.softmax(torch.from_numpy((rows - mean) / std).float() @ w + b, 1).numpy()
    return predict_proba


def stratified_folds(y: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """A fold index per row: each class spread evenly over the folds, in a seeded random order."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(len(idx)) % folds
    return fold


def out_of_fold_probs(x: np.ndarray, y: np.ndarray, classes: int, folds: int = 5, seed: int = 0,
                      l2: float = L2) -> np.ndarray:
    """Each row's class probabilities from a head fitted on the other folds (N x classes)."""
    fold = stratified_folds(y, folds, seed)
    probs = np.zeros((len(y), classes), dtype=np.float32)
    for k in range(folds):
        test = fold == k
        if test.any() and (~test).any():
            probs[test] = fit_softmax(x[~test], y[~test], classes, l2)(x[test])
    return probs


def ridge_predict(x: np.ndarray, y: np.ndarray, classes: int, rows: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Class scores of a ridge-regression classifier (one-hot targets) fitted on x, for new rows. Closed form in
    the smaller of N and D (the dual when there are fewer images than features): milliseconds, no iterations."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    a, b = (x - mean) / std, (rows - mean) / std
    targets = np.eye(classes)[y] - 1.0 / classes
    if len(a) <= a.shape[1]:
        coef = np.linalg.solve(a @ a.T + alpha * len(a) * np.eye(len(a)), targets)
        return b @ (a.T @ coef)
    return b @ np.linalg.solve(a.T @ a + alpha * len(a) * np.eye(a.shape[1]), a.T @ targets)


def cv_accuracy(x: np.ndarray, y: np.ndarray, classes: int, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a linear probe (ridge classifier): what `freeze: probe` can be expected to
    reach. The ridge form is closed, so ranking several backbones costs milliseconds after their features."""
    fold = stratified_folds(y, folds, seed)
    right = 0
    for k in range(folds):
        test = fold == k
        if test.any() and (~test).any():
            right += int((ridge_predict(x[~test], y[~test], classes, x[test]).argmax(1) == y[test]).sum())
    return right / len(y)
