"""Duplicates and leakage: planted exact and re-encoded/resized copies across train and val are all found; a
clean set reports none."""

from pathlib import Path

import pytest
from PIL import Image

from core.data.dataset import open_dataset
from core.data.duplicates import find_duplicates
from tests.conftest import make_image


def split_set(root: Path) -> Path:
    """train/ and val/ of two classes with distinct noisy pictures (seeds differ per file)."""
    for split, n in (("train", 6), ("val", 3)):
        for k, (name, color) in enumerate((("red", (200, 60, 60)), ("blue", (60, 60, 200)))):
            for i in range(n):
                seed = 1000 * k + 100 * (split == "val") + i
                make_image(root / split / name / f"{name}{i}.png", color, size=96, seed=seed)
    return root


def test_planted_copies_across_train_and_val_are_all_found(tmp_path):
    root = split_set(tmp_path / "set")
    src = root / "train" / "red" / "red0.png"
    (root / "val" / "red" / "exact_copy.png").write_bytes(src.read_bytes())
    img = Image.open(root / "train" / "blue" / "blue1.png")
    img.resize((70, 70)).save(root / "val" / "blue" / "smaller.jpg", quality=70)
    Image.open(root / "train" / "red" / "red2.png").save(root / "val" / "red" / "reencoded.jpg", quality=60)

    report = find_duplicates(open_dataset(root))

    assert sorted(report.leaked("val")) == ["val/blue/smaller.jpg", "val/red/exact_copy.png", "val/red/reencoded.jpg"]
    kinds = sorted(g.kind for g in report.groups)
    assert kinds == ["exact", "near", "near"]
    assert all(g.leaks for g in report.groups)
    assert report.summary()["leaked_val"] == 3


def test_distinct_images_are_not_duplicates(tmp_path):
    report = find_duplicates(open_dataset(split_set(tmp_path / "set")))
    assert report.groups == [] and report.num_images == 18


@pytest.mark.slow
def test_clean_ants_bees_has_no_duplicates(hymenoptera):
    report = find_duplicates(open_dataset(hymenoptera))
    assert report.groups == [] and report.num_images == 397
