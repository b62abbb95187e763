"""Browser uploads: folder-upload files written under a destination, their names never trusted as paths."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from core.errors import DatasetError
from core.files.paths import is_ignored, safe_component


def save_uploaded_files(files: list[tuple[str, bytes]], dest: Path) -> Path:
    """Write browser folder-upload files (relative names like `ds/cat/1.jpg`) under dest, safely.

    The names come from the browser and are never trusted as paths: only plain relative parts survive;
    anything with '..', an absolute path, a drive letter or a backslash is refused with its name.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, data in files:
        rel = PurePosixPath(name)
        if "\\" in name or rel.is_absolute() or ".." in rel.parts or (rel.parts and ":" in rel.parts[0]):
            raise DatasetError(f"Uploaded file name '{name}' is not a plain relative path; refused.")
        if is_ignored(Path(*rel.parts)):
            continue
        out = dest.joinpath(*map(safe_component, rel.parts))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        written += 1
    if not written:
        raise DatasetError("The upload held no usable files (only hidden or system files).")
    return dest
