"""Unlabeled images: a folder (any layout, searched recursively) or a .zip of image files without labels.

Self-supervised adaptation (core/engine/adapt.py) learns from them; distillation learns from them through a
teacher's predictions alone. They are Samples with label UNLABELED (-1): objectives leave them out of the label
loss and the accuracy, and Dataset.counts() does not count them under any class. Unusable files are skipped with
the reason, as in a labeled dataset; a path that does not exist or holds no usable image is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

from core.data.dataset import Sample, Skipped, folder_or_zip, image_files
from core.errors import DatasetError

UNLABELED = -1
NO_LABEL = UNLABELED  # the name self-supervised adaptation uses


def open_unlabeled(source: str | Path, extract_dir: str | Path | None = None) -> tuple[list[Sample], list[Skipped]]:
    """Every usable image under `source` as a Sample with label UNLABELED, and the files skipped with why."""
    give = "Give a folder of images or a .zip of one."
    src = folder_or_zip(source, extract_dir, missing="Unlabeled images: {src} does not exist. " + give,
                        not_zip="Unlabeled images: {src} is a file but not a .zip. " + give)
    files, skipped = image_files(src, src)
    samples = [Sample(str(path), UNLABELED) for path in files]
    if not samples:
        raise DatasetError(f"Unlabeled images: no usable images found in {source}.")
    return samples, skipped


def list_unlabeled(source: str | Path, extract_dir: str | Path) -> list[Sample]:
    """The usable images only (adaptation skips unusable files, as training does)."""
    return open_unlabeled(source, extract_dir)[0]
