"""Likely mislabeled training images, ranked by confident learning (Northcutt et al., 2021, via `cleanlab`).

Every training image needs probabilities from a model that never saw its label: K-fold cross-validated
logistic-regression heads on the pretrained backbone's pooled features (cached per machine, so this costs
seconds). cleanlab then ranks images by label quality (the out-of-sample probability of the given label,
"self-confidence") and flags the ones confident learning counts as label issues.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FOLDS = 5
C = 0.002  # inverse L2 strength on standardised features: strong, chosen on ants/bees with flipped labels


@dataclass(frozen=True)
class Suspect:
    path: str  # relative to the dataset root
    given: str
    suggested: str
    score: float  # label quality in 0..1: low = likely mislabeled
    flagged: bool  # counted as a label issue by confident learning
    suggested_prob: float


def out_of_sample_probs(features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0,
                        folds: int = FOLDS) -> np.ndarray:
    """N x C probabilities, each row from a head trained on the other folds only."""
    per_class = np.bincount(labels, minlength=num_classes)
    k = int(min(folds, per_class[per_class > 0].min()))
    if k < 2:
        raise ValueError("Every class needs at least 2 training images to look for mislabeled ones.")
    probs = np.full((len(labels), num_classes), 1e-6)
    for train_idx, test_idx in StratifiedKFold(k, shuffle=True, random_state=seed).split(features, labels):
        head = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        head.fit(features[train_idx], labels[train_idx])
        probs[np.ix_(test_idx, head[-1].classes_)] = head.predict_proba(features[test_idx])
    return probs / probs.sum(1, keepdims=True)


def rank_mislabels(probs: np.ndarray, labels: np.ndarray, paths: list[str], classes: list[str]) -> list[Suspect]:
    """Every image, least trustworthy label first (cleanlab's self-confidence score)."""
    scores = get_label_quality_scores(labels, probs, method="self_confidence")
    present = np.unique(labels)
    flagged = np.zeros(len(labels), dtype=bool)
    if len(present) >= 2 and len(labels) > len(present):
        # n_jobs=1: cleanlab otherwise forks a multiprocessing pool, and a fork of a process with other threads
        # (the app's server, a job's worker) can inherit a held lock: the pool's workers then wait forever, and so
        # does the Inspect page's job (seen in the browser test). One process is milliseconds here anyway.
        flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    order = np.argsort(scores, kind="stable")
    best_other = probs.copy()
    best_other[np.arange(len(labels)), labels] = -1  # the suggestion is the likeliest *other* class
    suggested = best_other.argmax(1)
    return [Suspect(paths[i], classes[labels[i]], classes[suggested[i]], float(scores[i]), bool(flagged[i]),
                    float(probs[i, suggested[i]])) for i in order]


def suspects_to_dicts(suspects: list[Suspect]) -> list[dict]:
    return [asdict(s) for s in suspects]
