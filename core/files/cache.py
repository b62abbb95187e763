"""The per-machine cache (features, ONNX models): one folder shared by every run, output folder and process.

`$TRANSFERLAB_CACHE`, else `$XDG_CACHE_HOME/transferlab`, else `~/.cache/transferlab`. Files are written
atomically; writers that merge into a shared file hold an exclusive lock (`locked`), so two processes writing at
once lose nothing. The folder is kept under a size bound by removing the least recently used files
(`evict_lru`; a file's modification time is its last use, `touch` on read). `FeatureCache` is one such shared
file: a table of vectors keyed by image content.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from core.files.atomic import atomic_write_bytes

CACHE_ENV = "TRANSFERLAB_CACHE"
MAX_BYTES_ENV = "TRANSFERLAB_CACHE_MAX_MB"
DEFAULT_MAX_BYTES = 4 * 1024**3


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "transferlab"


def max_bytes() -> int:
    mb = os.environ.get(MAX_BYTES_ENV)
    return int(float(mb) * 1024**2) if mb else DEFAULT_MAX_BYTES


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock for read-merge-write of `path` across processes (a `.lock` file beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def touch(path: Path) -> None:
    """Mark a cache file as used now (least-recently-used eviction reads modification times)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def evict_lru(folder: Path, limit: int | None = None, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used files under folder until it holds at most `limit` bytes; `keep` (the file
    just written) is never removed. Lock files and files being written (dot-prefixed temp files) are left."""
    limit = max_bytes() if limit is None else limit
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock") and
             not p.name.startswith(".")]
    sizes = {p: p.stat().st_size for p in files}
    total, removed = sum(sizes.values()), []
    for p in sorted(files, key=lambda f: f.stat().st_mtime):
        if total <= limit:
            break
        if keep is not None and p == keep:
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            total -= sizes[p]
            removed.append(p)
    return removed


class FeatureCache:
    """content-hash/view -> feature vector, persisted as one .npz per (model, preprocessing) key in this cache:
    shared by runs in any output folder, by ranking and analysis (core/models/features.py), and by distillation's
    teachers (core/engine/teachers.py). numpy only: a process that reads or writes it does not import torch.

    Saving merges with what other processes saved meanwhile, under a file lock, then writes atomically and keeps
    the cache folder under its size bound (least recently used files go first)."""

    def __init__(self, path: Path):
        self.path = path
        self.table: dict[str, np.ndarray] = self._read()
        self.new: dict[str, np.ndarray] = {}
        if self.table:
            touch(path)

    def _read(self) -> dict[str, np.ndarray]:
        if not self.path.exists():
            return {}
        try:
            with np.load(self.path) as z:
                return dict(zip(z["keys"].tolist(), z["feats"], strict=True))
        except (OSError, ValueError, KeyError):  # a damaged cache is rebuilt, never trusted
            return {}

    def get(self, key: str) -> np.ndarray | None:
        return self.table.get(key)

    def put(self, key: str, value: np.ndarray) -> None:
        self.table[key] = value
        self.new[key] = value

    def save(self) -> None:
        if not self.new:
            return
        with locked(self.path):
            merged = {**self._read(), **self.new}  # another process may have saved entries since we read
            buf = io.BytesIO()
            keys = list(merged)
            np.savez(buf, keys=np.array(keys), feats=np.stack([merged[k] for k in keys]))
            atomic_write_bytes(self.path, buf.getvalue())
        self.table, self.new = merged, {}
        evict_lru(self.path.parent.parent, keep=self.path)
