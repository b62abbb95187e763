"""Unlabeled images: a folder (any layout, searched recursively) or a .zip of image files without labels.

Self-supervised adaptation (core/engine/adapt.py) learns from them; distillation learns from them through a
teacher's predictions alone. They are Samples with label UNLABELED (-1): objectives leave them out of the label
loss and the accuracy, and Dataset.counts() does not count them under any class. Unusable files are skipped with
the reason, as in a labeled dataset; a path that does not exist or holds no usable image is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

from core.data.dataset import Sample, Skipped, check_image
from core.errors import DatasetError
from core.files.paths import is_ignored
from core.files.zips import extract_zip

UNLABELED = -1
NO_LABEL = UNLABELED  # the name self-supervised adaptation uses


def open_unlabeled(source: str | Path, extract_dir: str | Path | None = None) -> tuple[list[Sample], list[Skipped]]:
    """Every usable image under `source` as a Sample with label UNLABELED, and the files skipped with why."""
    src = Path(source).expanduser()
    if not src.exists():
        raise DatasetError(f"Unlabeled images: {src} does not exist. Give a folder of images or a .zip of one.")
    if src.is_file():
        if src.suffix.lower() != ".zip":
            raise DatasetError(f"Unlabeled images: {src} is a file but not a .zip. Give a folder of images or a "
                               f".zip of one.")
        src = extract_zip(src, Path(extract_dir) if extract_dir else src.parent / f".{src.stem}-extracted")
    samples, skipped = [], []
    for path in sorted(src.rglob("*")):
        if is_ignored(path.relative_to(src)) or not path.is_file() or path.is_symlink():
            continue
        reason = check_image(path)
        if reason:
            skipped.append(Skipped(str(path), reason))
        else:
            samples.append(Sample(str(path), UNLABELED))
    if not samples:
        raise DatasetError(f"Unlabeled images: no usable images found in {source}.")
    return samples, skipped


def list_unlabeled(source: str | Path, extract_dir: str | Path) -> list[Sample]:
    """The usable images only (adaptation skips unusable files, as training does)."""
    return open_unlabeled(source, extract_dir)[0]
