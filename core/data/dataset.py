"""Datasets of labeled image folders: find the classes, check every file, split.

Reads (a) a folder of class folders, (b) a folder with train/ and val/ (optionally test/) of class folders,
(c) a .zip of either. Files that are not usable images are skipped and listed with the reason; they never
stop a run. Decoding images into arrays is in `core.data.images`; zip safety in `core.files.zips`.
"""

from __future__ import annotations

import os
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from core.errors import DatasetError
from core.files.paths import is_ignored
from core.files.zips import extract_zip

# Same list as torchvision's ImageFolder: GIF is left out on purpose (animations and placeholders).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
MIN_IMAGES_PER_CLASS = 5
IMBALANCE_RATIO = 5.0
MAX_IMAGE_PIXELS = 64_000_000  # ~8000x8000; larger is refused as a possible decompression bomb

SCAN_CACHE_ENTRIES = 8  # folders whose checked file lists are kept in memory (see _scan_class_folders)

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
_SCANS: OrderedDict[tuple[str, int], tuple[dict[str, list[Path]], list[Skipped]]] = OrderedDict()
_SCANS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Sample:
    path: str
    label: int


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class Dataset:
    root: str
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    layout: str = "folders"  # "folders" (split made here) or "splits" (train/val given)

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for split in ("train", "val", "test"):
            samples = getattr(self, split)
            if split == "test" and not samples:
                continue
            out[split] = {c: 0 for c in self.classes}
            for s in samples:
                if s.label >= 0:  # unlabeled images (core/data/unlabeled.py) belong to no class
                    out[split][self.classes[s.label]] += 1
        return out

    def summary(self, examples: int = 6) -> dict:
        """Plain-JSON description: classes, counts per split, a few example paths per class, problems."""
        ex = {c: [s.path for s in self.train if s.label == i][:examples] for i, c in enumerate(self.classes)}
        return {"root": self.root, "layout": self.layout, "classes": self.classes, "counts": self.counts(),
                "examples": ex,
                "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
                "warnings": self.warnings}

    def drop(self, failed: list[Skipped]) -> None:
        """Remove samples that failed to decode later on and record why."""
        bad = {s.path for s in failed}
        for split in ("train", "val", "test"):
            setattr(self, split, [s for s in getattr(self, split) if s.path not in bad])
        self.skipped.extend(failed)


# ---------------------------------------------------------------------------------------------------------
# checking files

def check_image(path: Path) -> str | None:
    """Cheap header check; returns the reason a file is unusable, or None."""
    if path.suffix.lower() not in IMG_EXTENSIONS:
        if path.suffix.lower() == ".zip":
            return "a zip inside the dataset is not opened; unzip it into its class folder first"
        if path.suffix.lower() == ".gif":
            return "GIF files are not used for training (often animations or placeholders); convert to JPEG/PNG"
        return f"not an image file type ({path.suffix or 'no extension'}); supported: {', '.join(IMG_EXTENSIONS)}"
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as img:
            if img.format == "GIF":
                return "GIF content (animations/placeholders are not used); convert to JPEG/PNG"
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError
    except Image.DecompressionBombError:
        return f"image is larger than {MAX_IMAGE_PIXELS // 1_000_000} megapixels (possible decompression bomb)"
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        return f"not a readable image ({type(exc).__name__})"
    return None


# ---------------------------------------------------------------------------------------------------------
# finding the dataset

def extract_dir_for(output_dir: str | Path) -> Path:
    """Where uploaded or given zips are unpacked for runs written to output_dir: one place for the Data page and
    the engine, so a zip is unpacked once (keyed by its content hash inside)."""
    return Path(output_dir) / "_cache" / "datasets"


def folder_or_zip(source: str | Path, extract_dir: str | Path | None, missing: str, not_zip: str) -> Path:
    """`source` as a folder to read: a .zip is unpacked (once, keyed by its content) into extract_dir, or beside it.
    A path that does not exist, or a file that is not a .zip, is a DatasetError: `missing` and `not_zip` are its
    sentences, with {src} (the path) and {name} (the file name) filled in."""
    src = Path(source).expanduser()
    if not src.exists():
        raise DatasetError(missing.format(src=src, name=src.name))
    if src.is_file():
        if src.suffix.lower() != ".zip":
            raise DatasetError(not_zip.format(src=src, name=src.name))
        src = extract_zip(src, Path(extract_dir) if extract_dir else src.parent / f".{src.stem}-extracted")
    return src


def image_files(folder: Path, root: Path) -> tuple[list[Path], list[Skipped]]:
    """The usable images under `folder` (recursively, sorted) and the files skipped with the reason; names are
    judged relative to `root` (hidden and system files are passed over silently, as are links)."""
    files, skipped = [], []
    for path in sorted(folder.rglob("*")):
        if is_ignored(path.relative_to(root)) or not path.is_file() or path.is_symlink():
            continue
        reason = check_image(path)
        if reason:
            skipped.append(Skipped(str(path), reason))
        else:
            files.append(path)
    return files, skipped


def open_dataset(source: str | Path, val_fraction: float = 0.2, seed: int = 0,
                 extract_dir: str | Path | None = None) -> Dataset:
    """Scan a dataset folder or zip and return its classes, samples per split and skipped files."""
    if not str(source):
        raise DatasetError("No dataset given. Point to a folder of class folders or a .zip of one.")
    src = folder_or_zip(source, extract_dir, missing="Dataset path {src} does not exist.",
                        not_zip="{name} is a file but not a .zip. Give a folder of class folders or a zip.")
    root = descend_single_folder(src)
    splits = {SPLIT_NAMES[p.name.lower()]: p for p in _subdirs(root) if p.name.lower() in SPLIT_NAMES}
    if "train" in splits:
        return _open_split_layout(root, splits, val_fraction, seed)
    return _open_folder_layout(root, val_fraction, seed)


def _open_folder_layout(root: Path, val_fraction: float, seed: int) -> Dataset:
    per_class, skipped = _scan_class_folders(root)
    _require_classes(sorted(per_class), root, per_class)
    empty = sorted(c for c in per_class if not per_class[c])
    classes = sorted(c for c in per_class if per_class[c])
    train, val = [], []
    rng = random.Random(seed)
    for label, name in enumerate(classes):
        files = sorted(per_class[name])
        rng.shuffle(files)
        n_val = round(len(files) * val_fraction) if len(files) >= 2 else 0
        n_val = max(n_val, 1) if len(files) >= 2 else 0
        val += [Sample(str(p), label) for p in files[:n_val]]
        train += [Sample(str(p), label) for p in files[n_val:]]
    ds = Dataset(str(root), classes, train, val, skipped=skipped, layout="folders")
    ds.warnings = [f"Class folder '{c}' holds no usable images and is left out." for c in empty] + _warnings(ds)
    return ds


def _open_split_layout(root: Path, splits: dict[str, Path], val_fraction: float, seed: int) -> Dataset:
    scanned = {name: _scan_class_folders(path) for name, path in splits.items()}
    _require_classes(sorted(scanned["train"][0]), splits["train"], scanned["train"][0])
    classes = sorted(c for c, files in scanned["train"][0].items() if files)
    skipped = [s for _, sk in scanned.values() for s in sk]
    warnings = []
    out: dict[str, list[Sample]] = {}
    for name, (per_class, _) in scanned.items():
        extra = sorted(set(per_class) - set(classes))
        if extra:
            warnings.append(f"{name}/ has class folders not in train/ ({', '.join(extra)}); they are ignored.")
        out[name] = [Sample(str(p), classes.index(c)) for c in classes for p in sorted(per_class.get(c, []))]
    if "val" not in out:  # train/ (and maybe test/) only: hold out part of train
        sub = _open_folder_layout(splits["train"], val_fraction, seed)
        out["train"], out["val"] = sub.train, sub.val
    ds = Dataset(str(root), classes, out["train"], out["val"], out.get("test", []), skipped, warnings, "splits")
    ds.warnings += _warnings(ds)
    return ds


def _scan_class_folders(root: Path) -> tuple[dict[str, list[Path]], list[Skipped]]:
    """Every file of every class folder checked (a header read each: the slow part of opening a dataset). The
    result is kept per folder while its file listing (names, sizes, modification times) stays the same, so the
    Data page and the training it starts open a dataset once between them."""
    key = (str(root.resolve()), _listing_signature(root))
    with _SCANS_LOCK:
        hit = _SCANS.get(key)
        if hit is not None:
            _SCANS.move_to_end(key)
    if hit is None:
        hit = _scan_uncached(root)
        with _SCANS_LOCK:
            _SCANS[key] = hit
            while len(_SCANS) > SCAN_CACHE_ENTRIES:
                _SCANS.popitem(last=False)
    per_class, skipped = hit
    return {c: list(files) for c, files in per_class.items()}, list(skipped)


def _listing_signature(root: Path) -> int:
    """Changes when any file under root is added, removed, renamed, resized or rewritten."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            try:
                st = os.stat(os.path.join(dirpath, name), follow_symlinks=False)
            except OSError:
                continue
            entries.append((dirpath, name, st.st_size, st.st_mtime_ns))
    return hash(tuple(entries))


def _scan_uncached(root: Path) -> tuple[dict[str, list[Path]], list[Skipped]]:
    per_class: dict[str, list[Path]] = {}
    skipped: list[Skipped] = []
    for class_dir in _subdirs(root):
        files, bad = image_files(class_dir, root)
        per_class.setdefault(class_dir.name, []).extend(files)
        skipped += bad
    loose = [p for p in root.iterdir() if p.is_file() and not is_ignored(Path(p.name))]
    for p in loose:
        skipped.append(Skipped(str(p), "file is not inside a class folder; put images in <class>/ folders"))
    return per_class, skipped


def _require_classes(classes: list[str], root: Path, per_class: dict[str, list[Path]]) -> None:
    with_images = [c for c in classes if per_class[c]]
    if not classes:
        raise DatasetError(f"No class folders found in {root}. Expected one folder per class, each holding "
                           f"that class's images (e.g. {root}/cats/1.jpg, {root}/dogs/2.jpg).")
    if not with_images:
        raise DatasetError(f"No usable images found in the class folders of {root}. Supported types: "
                           f"{', '.join(IMG_EXTENSIONS)}.")
    if len(with_images) < 2:
        raise DatasetError(f"Only one class ({with_images[0]}) has images in {root}. A classifier needs at "
                           f"least two class folders with images.")


def _warnings(ds: Dataset) -> list[str]:
    out = []
    counts = ds.counts()["train"]
    for c, n in counts.items():
        if n == 0:
            out.append(f"Class '{c}' has no training images; the model cannot learn it.")
        elif n < MIN_IMAGES_PER_CLASS:
            out.append(f"Class '{c}' has only {n} training image(s); aim for at least {MIN_IMAGES_PER_CLASS}"
                       f" (better 20+).")
    nonzero = [n for n in counts.values() if n]
    if nonzero and max(nonzero) / min(nonzero) >= IMBALANCE_RATIO:
        big = max(counts, key=counts.get)
        small = min((c for c in counts if counts[c]), key=counts.get)
        out.append(f"Heavy class imbalance: '{big}' has {counts[big]} training images, '{small}' only "
                   f"{counts[small]}. Accuracy will favour the large class; look at per-class recall.")
    if not ds.val:
        out.append("No validation images: accuracy cannot be measured. Add images or a val/ folder.")
    return out


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink() and not is_ignored(Path(p.name)))


def descend_single_folder(root: Path) -> Path:
    """A zip of `flowers/` holds one top folder: look inside it, as a person would."""
    while True:
        dirs = _subdirs(root)
        files = [p for p in root.iterdir() if p.is_file() and not is_ignored(Path(p.name))]
        if len(dirs) == 1 and not files and dirs[0].name.lower() not in SPLIT_NAMES:
            inner = _subdirs(dirs[0])
            if inner:  # only descend when the single folder itself holds folders
                root = dirs[0]
                continue
        return root


def labeled_sample(ds: Dataset, max_images: int, min_per_class: int, seed: int = 0,
                   splits: tuple[str, ...] = ("train", "val")) -> list[Sample]:
    """Up to about max_images labeled images of `splits`, the same share of every class and at least
    min_per_class of each, in a seeded order: what backbone ranking (training images only) and the adaptation's
    probe score."""
    pool = [s for split in splits for s in getattr(ds, split)]
    by_class: dict[int, list[Sample]] = {}
    for s in pool:
        by_class.setdefault(s.label, []).append(s)
    rng = random.Random(seed)
    share = min(1.0, max_images / max(len(pool), 1))
    picked = []
    for label in sorted(by_class):
        items = sorted(by_class[label], key=lambda s: s.path)
        rng.shuffle(items)
        picked += items[:max(min_per_class, round(len(items) * share))]
    return picked
