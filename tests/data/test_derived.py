"""Derived datasets: hard links, edits applied, the split kept, bad edits refused, written once."""

import os
from pathlib import Path

import pytest

from core.data.dataset import open_dataset
from core.data.derived import derive_dataset, sample_paths
from core.errors import DatasetError


def test_excluded_left_out_relabelled_moved_split_kept_and_linked(tiny_folder, tmp_path):
    ds = open_dataset(tiny_folder, val_fraction=0.25, seed=0)  # folder layout: the split is made when opened
    red = [s.path for s in ds.train if ds.classes[s.label] == "red"]
    dropped, moved = red[0], red[1]
    out = derive_dataset(ds, tmp_path / "uploads", exclude={dropped}, relabel={moved: "blue"})

    assert out.parent == tmp_path / "uploads" and out.name.startswith("derived-")
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"train", "val"}
    assert not list(out.rglob(Path(dropped).name))
    assert (out / "train" / "blue" / Path(moved).name).is_file()
    assert not (out / "train" / "red" / Path(moved).name).exists()
    linked = out / "train" / "red" / Path(red[2]).name
    assert os.stat(linked).st_ino == os.stat(red[2]).st_ino  # a hard link, not a copy

    new = open_dataset(out, val_fraction=0.5, seed=1)  # another fraction and seed: the split must not change
    assert new.layout == "splits" and new.classes == ds.classes
    assert sorted(Path(s.path).name for s in new.val) == sorted(Path(s.path).name for s in ds.val)
    counts, before = new.counts(), ds.counts()
    assert counts["train"] == {"red": before["train"]["red"] - 2, "green": before["train"]["green"],
                               "blue": before["train"]["blue"] + 1}


def test_test_split_is_kept_and_report_names_map_to_samples(tmp_path, tiny_folder):
    root = tmp_path / "splits"
    for split in ("train", "val", "test"):
        for cls in ("red", "green"):
            for p in sorted((tiny_folder / cls).glob("*.png"))[:3]:
                (root / split / cls).mkdir(parents=True, exist_ok=True)
                os.link(p, root / split / cls / p.name)
    ds = open_dataset(root)
    names = sample_paths(ds.val, ds.root)
    out = derive_dataset(ds, tmp_path / "d", exclude={names["val/red/red_0.png"]}, relabel={})
    new = open_dataset(out)
    assert new.counts()["test"] == ds.counts()["test"]
    assert new.counts()["val"] == {"green": 3, "red": 2}


def test_unknown_class_and_emptied_class_are_refused_with_a_sentence(tiny_folder, tmp_path):
    ds = open_dataset(tiny_folder, val_fraction=0.25, seed=0)
    some = ds.train[0].path
    with pytest.raises(DatasetError, match=r"'purple' is not a class of this dataset; relabel images as one of"):
        derive_dataset(ds, tmp_path / "d", exclude=set(), relabel={some: "purple"})
    green = {s.path for s in ds.train if ds.classes[s.label] == "green"}
    with pytest.raises(DatasetError, match=r"leave class 'green' with no training image"):
        derive_dataset(ds, tmp_path / "d", exclude=green, relabel={})
    with pytest.raises(DatasetError, match=r"edited file\(s\) are not in the dataset"):
        derive_dataset(ds, tmp_path / "d", exclude={str(tmp_path / "nowhere.png")}, relabel={})
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())  # nothing half-written


def test_split_kept_when_the_source_has_no_val_folder_or_the_edits_empty_val(tmp_path, tiny_folder):
    root = tmp_path / "train-only"
    for cls in ("red", "green"):
        (root / "train" / cls).mkdir(parents=True)
        for p in sorted((tiny_folder / cls).glob("*.png")):
            os.link(p, root / "train" / cls / p.name)
    ds = open_dataset(root, val_fraction=0.25, seed=0)  # val is held out of train/ when opened
    out = derive_dataset(ds, tmp_path / "d", exclude=set(), relabel={})
    assert sorted(p.name for p in (out / "val").rglob("*.png")) == sorted(Path(s.path).name for s in ds.val)
    emptied = derive_dataset(ds, tmp_path / "d", exclude={s.path for s in ds.val}, relabel={})
    new = open_dataset(emptied, val_fraction=0.25, seed=0)
    assert (emptied / "val").is_dir() and not new.val and len(new.train) == len(ds.train)  # not re-split


def test_same_edits_return_the_same_folder_without_rewriting(tiny_folder, tmp_path, monkeypatch):
    ds = open_dataset(tiny_folder, val_fraction=0.25, seed=0)
    edits = {"exclude": {ds.train[0].path}, "relabel": {ds.train[1].path: "green"}}
    first = derive_dataset(ds, tmp_path / "d", **edits)
    stamps = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    marker = first / "train" / "marker.txt"
    marker.write_text("left alone")
    with monkeypatch.context() as m:
        m.setattr(os, "link", lambda *a: pytest.fail("the folder was written again"))
        again = derive_dataset(ds, tmp_path / "d", **edits)
    assert again == first and marker.read_text() == "left alone"
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file() and p != marker} == stamps
    other = derive_dataset(ds, tmp_path / "d", exclude=set(), relabel={})
    assert other != first
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted([first.name, other.name])  # no temp left


def test_copies_where_hard_links_fail(tiny_folder, tmp_path, monkeypatch):
    ds = open_dataset(tiny_folder, val_fraction=0.25, seed=0)

    def no_links(src, dst):
        raise OSError(18, "Invalid cross-device link")
    monkeypatch.setattr(os, "link", no_links)
    out = derive_dataset(ds, tmp_path / "d", exclude=set(), relabel={})
    copy = out / "train" / ds.classes[ds.train[0].label] / Path(ds.train[0].path).name
    assert copy.read_bytes() == Path(ds.train[0].path).read_bytes()
    assert os.stat(copy).st_ino != os.stat(ds.train[0].path).st_ino
