"""Class-balanced training: on a skewed training set every class counts the same in the loss, not every image.

Two ways, both from scikit-learn / torch rather than home-made: loss weights (`weights`: cross-entropy weighted per
class by sklearn's compute_class_weight("balanced"), n_images / (n_classes x n_class_images), King & Zeng 2001) and
a balanced sampler (`sampler`: each epoch draws as many training examples as there are, with replacement, each with
probability proportional to 1 / its class's count, through torch's WeightedRandomSampler). `auto` would take one of
them where the bench (python -m bench.balance, docs/measurements.md) found it raises balanced accuracy without costing
accuracy; it found no such rule (weights helped on 1 of the 5 dev sets skewed 3x or more, sampling on 2, and each
cost up to 5.7 points elsewhere; docs/decisions.md), so auto leaves training as it is and says so, with the skew, in
the run's note.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

AUTO_NOTE = ("auto leaves it off: class weights raised balanced accuracy on only 1 of the 5 skewed dev sets "
             "measured (docs/decisions.md); set balance to weights to try them")
EVEN = 1.5  # below this ratio of the largest class to the smallest, the classes are called even: nothing to weigh


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
    if ratio < EVEN:
        return Balance("off", f"the classes are about even ({present[small]} to {present[big]} training images each)")
    return Balance("off", f"{skew}; {AUTO_NOTE}")


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Per-class loss weights n / (k x n_c) over the classes present (mean 1 over the images); 1 for a class with no
    training image (it never occurs in the loss)."""
    from sklearn.utils.class_weight import compute_class_weight  # here: scikit-learn takes ~1 s to import,
    labels = np.asarray(labels)                                 # and only runs with balance weights use it
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
