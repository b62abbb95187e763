"""Duplicates and leakage between splits, found before training.

Exact duplicates share a content hash (the bytes). Near-duplicates (the same photo re-encoded, resized, or
lightly recompressed) share a perceptual hash: imagehash's pHash (DCT of a 32x32 grey image, 64 bits), two
images being near-duplicates when their hashes differ in at most NEAR_BITS bits. A validation image that has a
copy in the training set is leaked: the score on it overstates what the model does on new photos.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps

from core.data.dataset import Dataset
from core.files.digest import file_digest
from core.files.paths import relative_path

NEAR_BITS = 6  # see the module docstring; measured on ants/bees (docs/decisions.md)
SPLIT_ORDER = ("train", "val", "test")


@dataclass(frozen=True)
class Member:
    split: str
    path: str  # relative to the dataset root
    label: str


@dataclass(frozen=True)
class DuplicateGroup:
    kind: str  # "exact": same bytes; "near": same picture by perceptual hash
    members: list[Member]

    @property
    def splits(self) -> set[str]:
        return {m.split for m in self.members}

    @property
    def leaks(self) -> bool:
        """Spans training and an evaluated split."""
        return "train" in self.splits and len(self.splits) > 1


@dataclass
class DuplicateReport:
    groups: list[DuplicateGroup] = field(default_factory=list)
    num_images: int = 0

    def leaked(self, split: str = "val") -> list[str]:
        """Paths of `split` images with a copy in train (what 'drop from validation' removes)."""
        return sorted({m.path for g in self.groups if g.leaks for m in g.members if m.split == split})

    def summary(self) -> dict:
        """The small dict RunSummary.leakage and the CLI print."""
        return {"groups": len(self.groups), "exact_groups": sum(g.kind == "exact" for g in self.groups),
                "near_groups": sum(g.kind == "near" for g in self.groups),
                "leaked_val": len(self.leaked("val")), "leaked_test": len(self.leaked("test")),
                "num_images": self.num_images}

    def to_dict(self) -> dict:
        return {"summary": self.summary(), "groups": [asdict(g) for g in self.groups]}


def image_hashes(path: str | Path) -> tuple[str, int]:
    """(content hash, 64-bit pHash) of one image file, with its EXIF orientation applied as training does."""
    with Image.open(path) as img:
        img.draft("L", (128, 128))  # JPEG: decode at reduced scale, several times faster; pHash works at 32 px
        ph = imagehash.phash(ImageOps.exif_transpose(img).convert("L"))
    return file_digest(Path(path)), int(str(ph), 16)


def find_duplicates(ds: Dataset, progress: Callable[[int, int], None] | None = None,
                    near_bits: int = NEAR_BITS, workers: int = 2) -> DuplicateReport:
    """Groups of exact and near-duplicate images within and across train/val/test."""
    root = Path(ds.root)
    items = [(split, s) for split in SPLIT_ORDER for s in getattr(ds, split)]
    hashes: list[tuple[str, int] | None] = [None] * len(items)

    def work(i: int) -> None:
        try:
            hashes[i] = image_hashes(items[i][1].path)
        except OSError:  # unreadable now: the scan lists such files; it is not a duplicate of anything
            hashes[i] = None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(work, range(len(items))), 1):
            if progress and (done % 32 == 0 or done == len(items)):
                progress(done, len(items))
    members = [Member(split, relative_path(s.path, root), ds.classes[s.label]) for split, s in items]
    ok = [i for i, h in enumerate(hashes) if h is not None]
    groups = _exact_groups(ok, hashes, members)
    groups += _near_groups(ok, hashes, members, near_bits)
    groups.sort(key=lambda g: (not g.leaks, g.kind, g.members[0].path))
    return DuplicateReport(groups, len(items))


def _exact_groups(ok: list[int], hashes: list, members: list[Member]) -> list[DuplicateGroup]:
    by_digest: dict[str, list[int]] = {}
    for i in ok:
        by_digest.setdefault(hashes[i][0], []).append(i)
    return [DuplicateGroup("exact", [members[i] for i in idx]) for idx in by_digest.values() if len(idx) > 1]


def _near_groups(ok: list[int], hashes: list, members: list[Member], near_bits: int) -> list[DuplicateGroup]:
    """Connected groups of images whose pHashes differ in <= near_bits bits, minus pairs of exact copies."""
    ph = np.array([hashes[i][1] for i in ok], dtype=np.uint64)
    parent = list(range(len(ok)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a in range(len(ok) - 1):  # one vectorised row at a time: N^2/2 popcounts, memory O(N)
        close = np.nonzero(np.bitwise_count(ph[a + 1:] ^ ph[a]) <= near_bits)[0] + a + 1
        for b in close:
            if hashes[ok[a]][0] != hashes[ok[b]][0]:  # exact copies are already a group
                parent[find(int(b))] = find(a)
    comps: dict[int, list[int]] = {}
    for k in range(len(ok)):
        comps.setdefault(find(k), []).append(ok[k])
    return [DuplicateGroup("near", [members[i] for i in idx]) for idx in comps.values() if len(idx) > 1]


MAX_LEAKAGE_CHECK = 20_000  # images; above this the end of a run skips the check (the Inspect page runs it)


def leakage_summary(ds: Dataset) -> dict | None:
    """RunSummary.leakage: duplicate counts at the end of a run (a second or two per thousand images)."""
    if len(ds.train) + len(ds.val) + len(ds.test) > MAX_LEAKAGE_CHECK:
        return None
    report = find_duplicates(ds)
    return {**report.summary(), "leaked_val_paths": report.leaked("val")[:50]}
