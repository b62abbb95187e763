"""Atomic file writes: a temp file in the same folder, fsync, rename. Readers see the old file or the new one,
never half of one; a crash or a full disk leaves the previous version intact."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see old or new, never half.
    sync=False leaves out the fsync (readers still never see half a file; a machine crash may lose the write):
    for files rewritten many times a second, whose next version comes soon anyway."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; run files are meant to be read by the user's tools
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def share_file(src: Path, dest: Path) -> None:
    """Replace dest by a hard link to src, atomically: for two files with the same content (the best weights
    and the bundle's copy of them), one copy on disk. Where the filesystem has no hard links, both stay."""
    tmp = dest.with_name(dest.name + ".link")
    try:
        tmp.unlink(missing_ok=True)
        os.link(src, tmp)
        os.replace(tmp, dest)
    except OSError:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str, sync: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), sync)


def atomic_write_json(path: Path, obj: Any, sync: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n", sync)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
