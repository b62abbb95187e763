"""predictions.npz: per-image outputs of a run's best weights, for everything that looks at a run afterwards
(calibration, mislabel ranking, the embedding map, error galleries), so nothing has to run the model again.

Per evaluated split (`val`, and `test` when the dataset has one): full class probabilities, the pooled features
the head saw, the true labels and the file paths relative to the dataset root.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.files.atomic import atomic_write_bytes

SPLITS = ("val", "test")


@dataclass
class SplitOutputs:
    probs: np.ndarray  # N x C float32
    features: np.ndarray  # N x D float32
    labels: np.ndarray  # N int64
    paths: list[str]  # relative to the dataset root, '/'-separated
    unknown: np.ndarray | None = None  # N unknown-input scores (core/analysis/unknown.py), when the run has a scorer

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1) if len(self.probs) else np.zeros(0, dtype=np.int64)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean()) if len(self.labels) else float("nan")


@dataclass
class Predictions:
    classes: list[str]
    splits: dict[str, SplitOutputs]


def save_predictions(path: Path, preds: Predictions) -> None:
    arrays: dict[str, np.ndarray] = {"classes": np.array(preds.classes, dtype=str)}
    for name, out in preds.splits.items():
        arrays[f"{name}_probs"] = out.probs.astype(np.float32)
        arrays[f"{name}_features"] = out.features.astype(np.float32)
        arrays[f"{name}_labels"] = out.labels.astype(np.int64)
        arrays[f"{name}_paths"] = np.array(out.paths, dtype=str)
        if out.unknown is not None:
            arrays[f"{name}_unknown"] = out.unknown.astype(np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_predictions(path: Path) -> Predictions | None:
    """The run's predictions, or None for runs made before predictions.npz existed."""
    if not Path(path).exists():
        return None
    with np.load(path, allow_pickle=False) as z:  # strings are stored as unicode arrays: no pickles
        splits = {name: SplitOutputs(z[f"{name}_probs"], z[f"{name}_features"], z[f"{name}_labels"],
                                     z[f"{name}_paths"].tolist(),
                                     z[f"{name}_unknown"] if f"{name}_unknown" in z.files else None)
                  for name in SPLITS if f"{name}_probs" in z.files}
        return Predictions(z["classes"].tolist(), splits)
