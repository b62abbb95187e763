"""Zip archives from users: every member checked (slip paths, links, bombs) before anything is extracted."""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from core.errors import DatasetError
from core.files.digest import file_digest
from core.files.paths import is_ignored, safe_component

ZIP_MAX_TOTAL_BYTES = 8 * 1024**3
ZIP_MAX_RATIO = 200.0  # compressed -> uncompressed; real photos compress ~1:1, bombs by 1000s


def extract_zip(zip_path: Path, dest: Path) -> Path:
    """Safely extract a dataset zip into dest (reused when already extracted from the same bytes)."""
    digest = file_digest(zip_path)
    target = dest / digest[:16]
    if (target / ".complete").exists():
        return target
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise DatasetError(f"{zip_path.name} is not a valid zip archive (it may be truncated or another "
                           f"format renamed to .zip). Re-create the zip and upload it again.") from None
    with zf:
        members = safe_zip_members(zf, zip_path.name)
        tmp = dest / f".{digest[:16]}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for info, rel in members:
            out = tmp.joinpath(*map(safe_component, rel.parts))
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        (tmp / ".complete").write_text("ok")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


def safe_zip_members(zf: zipfile.ZipFile, name: str) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Members that are safe to extract (hidden entries dropped); raises on slip paths, links and bombs."""
    infos = zf.infolist()
    if not any(not i.is_dir() for i in infos):
        raise DatasetError(f"{name} is empty. Zip a folder that holds one folder per class.")
    total = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos) or 1
    # one highly compressed big member among real photos is a bomb too, even if the whole ratio looks fine
    worst = max(infos, key=lambda i: i.file_size / max(i.compress_size, 1))
    member_bomb = worst.file_size > 10_000_000 and worst.file_size / max(worst.compress_size, 1) > ZIP_MAX_RATIO
    if total > ZIP_MAX_TOTAL_BYTES or total / packed > ZIP_MAX_RATIO or member_bomb:
        raise DatasetError(f"{name} would unpack to {total / 1024**3:.2f} GiB from {packed / 1024**2:.1f} MiB "
                           f"(ratio {total / packed:.0f}:1"
                           + (f"; {worst.filename} alone {worst.file_size / max(worst.compress_size, 1):.0f}:1"
                              if member_bomb else "")
                           + f"); refused as a possible zip bomb. Limits: {ZIP_MAX_TOTAL_BYTES / 1024**3:.0f} GiB "
                             f"and {ZIP_MAX_RATIO:.0f}:1.")
    out = []
    for info in infos:
        raw = info.filename.replace("\\", "/")
        rel = PurePosixPath(raw)
        if raw.startswith("/") or ".." in rel.parts or (rel.parts and ":" in rel.parts[0]):
            raise DatasetError(f"{name} contains an unsafe path '{info.filename}' (absolute or with '..'); "
                               f"refused. Re-create the zip from the dataset folder itself.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DatasetError(f"{name} contains a symbolic link '{info.filename}'; links are refused. "
                               f"Zip the real files instead.")
        if info.is_dir() or is_ignored(Path(*rel.parts)):
            continue
        out.append((info, rel))
    return out
