"""The per-machine cache (features, ONNX models): one folder shared by every run, output folder and process.

`$TRANSFERLAB_CACHE`, else `$XDG_CACHE_HOME/transferlab`, else `~/.cache/transferlab`. Files are written
atomically; writers that merge into a shared file hold an exclusive lock (`locked`), so two processes writing at
once lose nothing. The folder is kept under a size bound by removing the least recently used files
(`evict_lru`; a file's modification time is its last use, `touch` on read).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

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
