"""Names that come from outside (folders, zips, browser uploads): what to ignore, how to shorten, and how reports,
records and saved predictions name a dataset's file."""

from __future__ import annotations

import hashlib
from pathlib import Path

IGNORED_NAMES = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini", ".ipynb_checkpoints"}


def is_ignored(rel: Path) -> bool:
    return any(part in IGNORED_NAMES or part.startswith(".") for part in rel.parts)


def safe_component(name: str, limit: int = 200) -> str:
    """File systems refuse names over 255 bytes: shorten long ones, keeping the extension and uniqueness."""
    if len(name.encode("utf-8")) <= limit:
        return name
    stem, suffix = Path(name).stem, Path(name).suffix[:16]
    tag = hashlib.blake2b(name.encode("utf-8"), digest_size=4).hexdigest()
    while len((stem + tag + suffix).encode("utf-8")) > limit - 1:
        stem = stem[:-8]
    return f"{stem}-{tag}{suffix}"


def relative_path(path: str | Path, root: str | Path) -> str:
    """`path` relative to the dataset root ('/'-separated); just the file name when it lies elsewhere. How
    predictions, run records and duplicate reports name an image: they travel and must not locate server data."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).name
