"""A linear probe on frozen features, cross-validated in milliseconds: the transferability score of a backbone (how
well a linear head separates the classes). A ridge classifier in closed form on standardised features (12-39 s
for L-BFGS logistic heads vs 0.3-2 s, within 1-2 points, measured on ants/bees and rsscn7); folds are stratified
and seeded. The mislabel ranking (core/analysis/mislabels.py) fits logistic heads of its own for probabilities.
"""

from __future__ import annotations

import numpy as np


def stratified_folds(y: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """A fold index per row: each class spread evenly over the folds, in a seeded random order."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(len(idx)) % folds
    return fold


def standardise(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and rows scaled by x's per-feature mean and spread: the inputs the ridge probe's weights act on."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    return (x - mean) / std, (rows - mean) / std


def ridge_predict(x: np.ndarray, y: np.ndarray, classes: int, rows: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Class scores of a ridge-regression classifier (one-hot targets) fitted on x, for new rows. Closed form in
    the smaller of N and D (the dual when there are fewer images than features): milliseconds, no iterations."""
    a, b = standardise(x, rows)
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


LOGISTIC_C = (1e-3, 1e-2, 1e-1, 1.0)  # inverse L2 strengths tried: the dev sets' cross-validated choices span them all


def logistic_head(x: np.ndarray, y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, classes: int,
                  balanced: bool = False) -> tuple[float, float, np.ndarray, np.ndarray]:
    """An L2 logistic regression on (standardised) features, its strength chosen on validation: the probe recipe of
    an expert (bench/experts.py R1, scikit-learn's objective: C x the sum of the losses + |W|^2 / 2, the biases not
    penalised) as a candidate head. Solved with torch's L-BFGS along the path from the strongest penalty to the
    weakest, each fit starting where the last ended: importing scikit-learn alone took 1.9 s of a 2.3 s probe
    repeat, the fits 0.04 s. Returns (C, validation accuracy, weights classes x D, biases) of the best strength."""
    import torch
    import torch.nn.functional as F

    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    vx, n = torch.as_tensor(val_x, dtype=torch.float32), len(y)
    counts = torch.bincount(yt, minlength=classes).float()
    present = counts > 0
    weight = torch.ones(classes)  # scikit-learn's class_weight="balanced": n / (classes present x the class's images)
    if balanced:
        weight[present] = n / (int(present.sum()) * counts[present])
    w = torch.zeros(classes, xt.shape[1], requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    best = None
    for c in LOGISTIC_C:
        opt = torch.optim.LBFGS([w, b], max_iter=200, tolerance_grad=1e-6, line_search_fn="strong_wolfe")

        def objective(c: float = c, opt: torch.optim.Optimizer = opt) -> torch.Tensor:
            opt.zero_grad()
            loss = (F.cross_entropy(xt @ w.T + b, yt, reduction="none") * weight[yt]).sum() / n
            loss = loss + (w * w).sum() / (2 * c * n)
            loss.backward()
            return loss
        opt.step(objective)
        with torch.no_grad():
            acc = float(((vx @ w.T + b).argmax(1).numpy() == val_y).mean())
        if best is None or acc > best[1]:
            best = (c, acc, w.detach().numpy().copy(), b.detach().numpy().copy())
    c, acc, coef, bias = best
    bias[~present.numpy()] = -1e4  # a class without training images is never predicted
    return c, acc, coef, bias
