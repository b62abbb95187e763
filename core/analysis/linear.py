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
    """scikit-learn's L2 logistic regression on (standardised) features, its strength chosen on validation: the
    probe recipe of an expert (bench/experts.py R1) as a candidate head. Returns (C, validation accuracy, weights
    classes x D, biases) of the best strength; the weights give the same argmax as sklearn's on any row."""
    from sklearn.linear_model import LogisticRegression
    best = None
    for c in LOGISTIC_C:
        model = LogisticRegression(C=c, max_iter=500, class_weight="balanced" if balanced else None).fit(x, y)
        acc = float((model.predict(val_x) == val_y).mean())
        if best is None or acc > best[1]:
            best = (c, acc, model)
    c, acc, model = best
    coef, bias = model.coef_, model.intercept_
    if coef.shape[0] == 1:  # two classes: sklearn keeps one score for class 1; as two logits, -s/2 and +s/2
        coef, bias = np.concatenate([-coef, coef]) / 2, np.concatenate([-bias, bias]) / 2
    full_w, full_b = np.zeros((classes, x.shape[1])), np.full(classes, -1e4)  # a class without training images
    full_w[model.classes_], full_b[model.classes_] = coef, bias
    return c, acc, full_w, full_b
