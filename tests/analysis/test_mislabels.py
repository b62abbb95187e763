"""Mislabel ranking: flipped labels come first, on generated features and on ants/bees with the real backbone."""

import numpy as np
import pytest

from core.analysis.mislabels import out_of_sample_probs, rank_mislabels


def flipped(labels: np.ndarray, fraction: float, classes: int, seed: int = 0) -> tuple[np.ndarray, set[int]]:
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(labels), round(fraction * len(labels)), replace=False)
    noisy = labels.copy()
    noisy[idx] = (noisy[idx] + rng.integers(1, classes, len(idx))) % classes
    return noisy, set(idx.tolist())


def recall_in_top(noisy, flips, probs, classes) -> float:
    ranked = rank_mislabels(probs, noisy, [str(i) for i in range(len(noisy))], classes)
    top = {int(s.path) for s in ranked[:len(flips)]}
    return len(top & flips) / len(flips)


def test_the_ranking_never_forks_processes(monkeypatch):
    """A fork from the app's multithreaded server can deadlock (the Inspect job hung so): cleanlab must run in
    this process. Forking is made to fail; the ranking still flags the flipped labels."""
    import multiprocessing

    def no_pool(*args, **kwargs):
        raise AssertionError("the mislabel ranking started a process pool")
    monkeypatch.setattr(multiprocessing, "Pool", no_pool)
    labels = np.repeat(np.arange(3), 40)
    noisy, flips = flipped(labels, 0.1, 3)
    probs = np.full((len(labels), 3), 0.05)
    probs[np.arange(len(labels)), labels] = 0.9
    assert {int(s.path) for s in rank_mislabels(probs, noisy, [str(i) for i in range(len(noisy))],
                                                ["a", "b", "c"]) if s.flagged} == flips


def test_flipped_labels_rank_first_on_separable_features():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    centres = rng.normal(0, 3, (3, 16))
    feats = centres[labels] + rng.normal(0, 1, (len(labels), 16))
    noisy, flips = flipped(labels, 0.1, 3)
    probs = out_of_sample_probs(feats, noisy, 3)
    assert recall_in_top(noisy, flips, probs, ["a", "b", "c"]) >= 0.9
    ranked = rank_mislabels(probs, noisy, [str(i) for i in range(len(noisy))], ["a", "b", "c"])
    worst = ranked[0]
    assert worst.given != worst.suggested and int(worst.path) in flips
    assert worst.suggested == "abc"[labels[int(worst.path)]]  # the suggestion is the true class


def test_a_class_with_one_image_is_a_sentence():
    feats = np.random.default_rng(0).normal(size=(6, 4))
    with pytest.raises(ValueError, match="at least 2 training images"):
        out_of_sample_probs(feats, np.array([0, 0, 0, 0, 0, 1]), 2)


@pytest.mark.slow
def test_ten_percent_flipped_ants_bees_labels_are_mostly_in_the_top_ten_percent(hymenoptera):
    from core.config import TrainConfig
    from core.data.dataset import open_dataset
    from core.models.features import pretrained_features
    ds = open_dataset(hymenoptera)
    feats, _ = pretrained_features(TrainConfig(), ds.train, exact=True)
    x = np.stack([f[0] for f in feats])
    noisy, flips = flipped(np.array([s.label for s in ds.train]), 0.1, 2, seed=0)
    recall = recall_in_top(noisy, flips, out_of_sample_probs(x, noisy, 2), ds.classes)
    assert recall >= 0.7, recall
