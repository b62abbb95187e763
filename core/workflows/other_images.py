"""A folder of other images scored with a run's unknown-input score: how many of them the delivered model would call
"none of these" (the Inspect page draws their scores beside the validation images')."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.unlabeled import open_unlabeled
from core.export.bundle import load_bundle

BATCH = 16


@dataclass(frozen=True)
class OtherImages:
    source: str
    paths: list[str]
    scores: np.ndarray  # the unknown-input score of each image (higher = more unlike the training images)
    threshold: float

    @property
    def flagged(self) -> float:
        """The share of these images reported as "none of these"."""
        return float((self.scores > self.threshold).mean()) if len(self.scores) else 0.0


def score_other_images(bundle_dir: str | Path, source: str | Path, extract_dir: str | Path | None = None,
                       progress: Callable[[str, int, int], None] | None = None,
                       should_stop: Callable[[], bool] = lambda: False) -> OtherImages | None:
    """Every usable image of `source` (a folder or .zip) scored by the bundle in `bundle_dir`, as predict scores it;
    None when stopped. A bundle without a scorer is refused with a sentence."""
    model = load_bundle(bundle_dir)
    if model.unknown is None:
        raise ValueError(f"The model in {bundle_dir} has no unknown-input score (a multi-task run, or one trained "
                         f"before the score existed): there is nothing to compare these images with.")
    samples, _ = open_unlabeled(source, extract_dir)
    paths, scores = [s.path for s in samples], []
    for i in range(0, len(paths), BATCH):
        if should_stop():
            return None
        scores += [p.unknown_score for p in model.assess(paths[i:i + BATCH], topk=1)]
        if progress:
            progress("scoring the other images", min(i + BATCH, len(paths)), len(paths))
    return OtherImages(str(source), paths, np.asarray(scores, dtype=np.float64), float(model.unknown_threshold))
