"""Class-balanced training: on a skewed training set every class counts the same in the loss, not every image.

Two ways, both from scikit-learn / torch rather than home-made: loss weights (`weights`: cross-entropy weighted per
class by sklearn's compute_class_weight("balanced"), n_images / (n_classes x n_class_images), King & Zeng 2001) and
a balanced sampler (`sampler`: each epoch draws as many training examples as there are, with replacement, each with
probability proportional to 1 / its class's count, through torch's WeightedRandomSampler). `auto` takes one of them
only where the bench (python -m bench.balance, docs/measurements.md) found it raises balanced accuracy without costing
accuracy on the balanced dev sets: the rule is `decide` below, in one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import WeightedRandomSampler

AUTO_RATIO = 3.0  # auto balances when the largest class has at least this many times the images of the smallest
AUTO_MODE = "weights"  # what auto turns on (the bench: the better of the two on the skewed sets)


@dataclass(frozen=True)
class Balance:
    """What a run does about skewed classes: mode 'off' | 'weights' | 'sampler', and the sentence that says why."""

    mode: str
    reason: str

    @property
    def note(self) -> str:
        return f"balanced: {'off' if self.mode == 'off' else f'on ({self.label})'} because {self.reason}"

    @property
    def label(self) -> str:
        return {"weights": "class-weighted loss", "sampler": "class-balanced sampling"}.get(self.mode, "off")


def decide(setting: str, counts: dict[str, int]) -> Balance:
    """The balance of a run from cfg.balance and the training images per class (classes with none are left out)."""
    present = {c: n for c, n in counts.items() if n}
    if not present:
        return Balance("off", "there are no training images")
    big, small = max(present, key=present.get), min(present, key=present.get)
    ratio = present[big] / present[small]
    skew = f"'{big}' has {ratio:.1f}x the training images of '{small}' ({present[big]} vs {present[small]})"
    if setting != "auto":
        return Balance(setting, f"balance is set to {setting}; {skew}")
    if ratio >= AUTO_RATIO:
        return Balance(AUTO_MODE, f"{skew}, at least {AUTO_RATIO:g}x (balance auto)")
    return Balance("off", f"{skew}, under {AUTO_RATIO:g}x (balance auto)")


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Per-class loss weights n / (k x n_c) over the classes present (mean 1 over the images); 1 for a class with no
    training image (it never occurs in the loss)."""
    labels = np.asarray(labels)
    present = np.unique(labels[labels >= 0])
    w = np.ones(num_classes, dtype=np.float32)
    w[present] = compute_class_weight("balanced", classes=present, y=labels[labels >= 0])
    return torch.from_numpy(w)


def epoch_order(labels: torch.Tensor, balance: Balance, gen: torch.Generator) -> torch.Tensor:
    """The training examples of one epoch, as indices: a permutation, or with the balanced sampler as many draws
    (with replacement) where each class comes up equally often on average."""
    if balance.mode != "sampler":
        return torch.randperm(len(labels), generator=gen)
    y = labels.cpu().numpy()
    per_image = 1.0 / np.bincount(y)[y]
    sampler = WeightedRandomSampler(torch.from_numpy(per_image), len(y), replacement=True, generator=gen)
    return torch.tensor(list(sampler), dtype=torch.long)
