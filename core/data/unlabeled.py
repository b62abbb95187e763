"""Unlabeled images: every image file under a folder (recursively) or inside a .zip, as samples without labels.

Used by self-supervised adaptation (core/engine/adapt.py). A folder with no images, or a path that does not exist,
is an error that names the path; files that later fail to decode are skipped by the caller, as in training.
"""

from __future__ import annotations

from pathlib import Path

from core.data.dataset import IMG_EXTENSIONS, Sample
from core.errors import DatasetError
from core.files.paths import is_ignored
from core.files.zips import extract_zip

NO_LABEL = -1


def list_unlabeled(source: str | Path, extract_dir: str | Path) -> list[Sample]:
    """Every image under `source` (a folder, searched recursively, or a .zip, unpacked safely into extract_dir),
    sorted by path, with label NO_LABEL."""
    src = Path(source).expanduser()
    if not src.exists():
        raise DatasetError(f"Unlabeled images: {src} does not exist. Give a folder of images or a .zip of one.")
    if src.is_file():
        if src.suffix.lower() != ".zip":
            raise DatasetError(f"Unlabeled images: {src} is a file but not a .zip. Give a folder of images or a "
                               f".zip of one.")
        src = extract_zip(src, Path(extract_dir))
    paths = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS
                   and not is_ignored(p.relative_to(src)))
    if not paths:
        raise DatasetError(f"Unlabeled images: no image files ({', '.join(IMG_EXTENSIONS)}) found in {source}.")
    return [Sample(str(p), NO_LABEL) for p in paths]
