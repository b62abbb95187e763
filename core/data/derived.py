"""Derived datasets: a dataset with some training images left out or moved to another class, as a new folder.

The Inspect page (likely mislabeled images) and the Data page (duplicates leaking into validation) edit a dataset
without touching the user's files: the edits become a folder in the train/ + val/ (+ test/) layout whose files are
hard links to the originals (copies where the filesystem refuses links), so it costs no space and keeps the
original split exactly (the folder names it, so opening it never re-splits). Its name is a hash of the source
files and the edits: the same edits give the same folder, written once, atomically (a temp folder renamed when
complete).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from core.data.dataset import Dataset, Sample
from core.errors import DatasetError
from core.files.atomic import atomic_write_json
from core.files.paths import relative_path

SPLITS = ("train", "val", "test")
MANIFEST = "derived.json"  # beside train/ and val/: where the folder came from (opening it ignores the file)


def sample_paths(samples: Iterable[Sample], root: str | Path) -> dict[str, str]:
    """Report names (files.paths.relative_path) -> the Dataset's own sample paths, which derive_dataset takes."""
    return {relative_path(s.path, root): s.path for s in samples}


def derive_dataset(ds: Dataset, dest: Path, exclude: set[str], relabel: dict[str, str],
                   add: dict[str, str] | None = None, labeling: dict | None = None) -> Path:
    """Write (once) and return dest/derived-<hash>: ds's split without `exclude`, `relabel` files in their new class,
    and `add` (new image file -> class name: labels given on the Label page) in train.

    Paths are the Dataset's sample paths; relabel maps a path to a class name of ds. `labeling` (the labeling round
    the added labels came from) goes into the manifest, where a run's lineage reads it (labeling_note). Raises
    DatasetError with one sentence when an edit names an unknown file or class, or leaves a class without training
    images.
    """
    add = add or {}
    _check_edits(ds, exclude, relabel)
    _check_added(ds, add)
    plan = _plan(ds, exclude, relabel)
    plan["train"] += sorted(add.items())
    _check_classes(ds, plan)
    target = Path(dest) / f"derived-{_edits_hash(ds, exclude, {**relabel, **add})}"
    if target.is_dir():  # same source files, same edits: already written (renamed in only when complete)
        return target
    Path(dest).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=f".{target.name}.", suffix=".partial"))
    try:
        _write(plan, tmp)
        atomic_write_json(tmp / MANIFEST, {"source": ds.root, "classes": ds.classes, "excluded": sorted(exclude),
                                           "relabelled": dict(sorted(relabel.items())),
                                           "added": dict(sorted(add.items())), "labeling": labeling})
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if target.is_dir():  # another session wrote the same edits first
            return target
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _check_edits(ds: Dataset, exclude: set[str], relabel: dict[str, str]) -> None:
    """Refuse edits that name files or classes the dataset does not have (a stale report, a typo)."""
    known = {s.path for split in SPLITS for s in getattr(ds, split)}
    unknown = sorted((set(exclude) | set(relabel)) - known)
    if unknown:
        raise DatasetError(f"{len(unknown)} edited file(s) are not in the dataset at {ds.root} (e.g. {unknown[0]}); "
                           f"analyse the dataset again and redo the edits.")
    bad = sorted(set(relabel.values()) - set(ds.classes))
    if bad:
        raise DatasetError(f"'{bad[0]}' is not a class of this dataset; relabel images as one of: "
                           f"{', '.join(ds.classes)}.")


def _check_added(ds: Dataset, add: dict[str, str]) -> None:
    """New labeled images must exist and name a class of the dataset."""
    missing = sorted(p for p in add if not Path(p).is_file())
    if missing:
        raise DatasetError(f"{len(missing)} labeled image(s) are gone (e.g. {missing[0]}); choose the pool again.")
    bad = sorted(set(add.values()) - set(ds.classes))
    if bad:
        raise DatasetError(f"'{bad[0]}' is not a class of this dataset; label images as one of: "
                           f"{', '.join(ds.classes)}.")


def labeling_of(root: str | Path) -> dict | None:
    """The labeling round a derived dataset's added labels came from ({"round", "labels", "total", "run"}), or
    None for any other dataset."""
    path = Path(root) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("labeling") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None


def labeling_note(root: str | Path) -> str:
    """What a run's lineage adds about its dataset: how many labels came from suggestions, in which round."""
    lab = labeling_of(root)
    if not lab:
        return ""
    total = f", {lab['total']} in all" if lab.get("total", lab["labels"]) != lab["labels"] else ""
    n, pseudo = lab["labels"], lab.get("pseudo", 0)
    extra = f", {pseudo} pseudo-labels" if pseudo else ""
    return f" ({n} label{'s' if n != 1 else ''} from suggestions, labeling round {lab['round']}{total}{extra})"


def _plan(ds: Dataset, exclude: set[str], relabel: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    """Per split: (source file, class name) of every file the derived folder holds."""
    return {split: [(s.path, relabel.get(s.path, ds.classes[s.label])) for s in getattr(ds, split)
                    if s.path not in exclude] for split in SPLITS}


def _check_classes(ds: Dataset, plan: dict[str, list[tuple[str, str]]]) -> None:
    """A class the edits empty would vanish from the derived dataset and change the model's outputs: refuse."""
    left = {c for _, c in plan["train"]}
    empty = [c for c in ds.classes if c not in left]
    if empty:
        raise DatasetError(f"The edits leave class '{empty[0]}' with no training image; keep at least one of its "
                           f"images (or remove the class folder from the dataset itself).")


def _edits_hash(ds: Dataset, exclude: set[str], relabel: dict[str, str]) -> str:
    """Short hash of the source files (paths, labels, split) and the edits: the derived folder's name."""
    key = {"root": ds.root, "classes": ds.classes,
           "splits": {split: [[s.path, s.label] for s in getattr(ds, split)] for split in SPLITS},
           "exclude": sorted(exclude), "relabel": sorted(relabel.items())}
    return hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=6).hexdigest()


def _write(plan: dict[str, list[tuple[str, str]]], out: Path) -> None:
    """train/ and val/ always (an empty val/ still says 'do not re-split'), test/ when the source had one."""
    for split, files in plan.items():
        if split == "test" and not files:
            continue
        (out / split).mkdir()
        taken: set[Path] = set()
        for src, cls in files:
            dst = _free_name(out / split / cls / Path(src).name, taken)
            dst.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(Path(src), dst)


def _free_name(path: Path, taken: set[Path]) -> Path:
    """Two sources with one file name in one class folder (a relabelled image, nested folders): number the second."""
    candidate, n = path, 1
    while candidate in taken:
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    taken.add(candidate)
    return candidate


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link costs no space and no time; across filesystems (or where links are refused) copy instead."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
