"""Classification metrics from predictions: accuracy, balanced accuracy, per-class precision/recall/F1, confusion
matrix. Balanced accuracy is the mean per-class recall over the classes present (sklearn's balanced_accuracy_score,
which tests/analysis check it against): on a skewed set the small classes count as much as the large ones."""

from __future__ import annotations

import numpy as np


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Everything the summary and the results page show, as plain JSON-able Python values."""
    k = len(classes)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    tp = np.diag(cm).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = cm.sum(1) > 0  # macro averages over classes that occur in the evaluation set
    macro_recall = float(recall[present].mean()) if present.any() else 0.0
    per_class = {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                     "support": int(cm[i].sum())} for i, c in enumerate(classes)}
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "balanced_accuracy": macro_recall,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": macro_recall,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }
