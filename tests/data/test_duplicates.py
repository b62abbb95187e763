"""Duplicates and leakage: planted copies (exact, resized, re-encoded, cropped, mirrored) across train and val are
all found; distinct pictures and regular patterns (which a perceptual hash alone cannot tell apart) are not
grouped; the search is not pairwise and has no size cap; fingerprints come from the machine cache on a rescan."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.planted import brushed_metal, patterns, photo_like, planted_copies
from core.data import duplicates as dup
from core.data import fingerprints as fp_module
from core.data.dataset import open_dataset
from core.data.duplicates import NEAR_BITS, find_duplicates, leakage_summary, near_pairs
from core.data.fingerprints import fingerprints, phash, unpack


def photo_set(root: Path) -> Path:
    """train/ and val/ of two classes of distinct photo-like pictures (one seed per file)."""
    for split, n in (("train", 6), ("val", 3)):
        for k, name in enumerate(("cats", "dogs")):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                photo_like(1000 * k + 100 * (split == "val") + i).save(root / split / name / f"{name}{i}.png")
    return root


def test_planted_copies_across_train_and_val_are_all_found(tmp_path):
    root = photo_set(tmp_path / "set")
    (root / "val" / "cats" / "exact_copy.png").write_bytes((root / "train" / "cats" / "cats0.png").read_bytes())
    for kind, img in planted_copies(photo_like(1001)).items():  # copies of train/dogs/dogs1.png
        img.save(root / "val" / "dogs" / f"{kind}.jpg")
    report = find_duplicates(open_dataset(root))

    assert report.leaked("val") == ["val/cats/exact_copy.png", "val/dogs/cropped.jpg", "val/dogs/mirrored.jpg",
                                    "val/dogs/reencoded.jpg", "val/dogs/resized.jpg"]
    assert sorted(g.kind for g in report.groups) == ["exact", "near"]
    near = next(g for g in report.groups if g.kind == "near")
    assert sorted(m.path for m in near.members) == ["train/dogs/dogs1.png", "val/dogs/cropped.jpg",
                                                    "val/dogs/mirrored.jpg", "val/dogs/reencoded.jpg",
                                                    "val/dogs/resized.jpg"]
    assert report.summary()["leaked_val"] == 5 and leakage_summary(open_dataset(root))["leaked_val"] == 5


def test_distinct_pictures_are_not_duplicates(tmp_path):
    report = find_duplicates(open_dataset(photo_set(tmp_path / "set")))
    assert report.groups == [] and report.num_images == 18


def test_regular_patterns_are_not_grouped(tmp_path):
    """Stripes of several colours and widths, grids and chequerboards: their pHashes collide (checked here, so the
    test means something), the thumbnails' structural similarity keeps them apart."""
    for key, img in patterns().items():
        folder = tmp_path / "patterns" / key.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{key}.png")
    ds = open_dataset(tmp_path / "patterns")
    _, _, table = fingerprints([s.path for s in ds.train + ds.val])
    hashes, _ = unpack(table)
    full = np.ascontiguousarray(hashes[:, 0])
    assert (near_pairs(full, full, NEAR_BITS)[:, 0] != near_pairs(full, full, NEAR_BITS)[:, 1]).sum() > 50

    report = find_duplicates(ds)

    assert report.num_images == 48 and report.groups == []


def test_look_alike_surfaces_are_not_grouped_but_a_re_exposed_copy_is(tmp_path):
    """Eight different tiles of dark metal under the same light and streaks (bench.planted.brushed_metal): some
    pairs pass pHash, SSIM, colour and overall detail (checked here: what grouped different magnetic tiles), the
    block-by-block detail check keeps them apart; tile 1 photographed again brighter and smaller joins its source."""
    for seed in range(1, 10):  # two classes, as the look-alike magnetic tiles spanned classes
        folder = tmp_path / "metal" / ("val" if seed == 9 else "train") / ("crack" if seed % 2 else "free")
        folder.mkdir(parents=True, exist_ok=True)
        brushed_metal(seed).save(folder / f"tile{seed}.jpg", quality=90)
    brushed_metal(1, gain=1.1).resize((150, 150)).save(tmp_path / "metal" / "val" / "crack" / "again.jpg")
    ds = open_dataset(tmp_path / "metal")
    _, _, table = fingerprints([s.path for s in ds.train])
    hashes, thumbs = unpack(table)
    pairs = near_pairs(np.ascontiguousarray(hashes[:, 0]), np.ascontiguousarray(hashes[:, 0]), NEAR_BITS)
    pairs = pairs[pairs[:, 0] < pairs[:, 1]]
    s, diff, detail = dup.measures(thumbs[pairs[:, 0]], thumbs[pairs[:, 1]])
    assert ((s >= dup.MIN_SSIM) & (diff <= dup.MAX_COLOUR_DIFF) & (detail >= dup.MIN_DETAIL)).sum() >= 1

    report = find_duplicates(ds)

    assert [sorted(m.path for m in g.members) for g in report.groups] == [["train/crack/tile1.jpg",
                                                                           "val/crack/again.jpg"]]


def test_near_pairs_finds_every_close_pair_without_comparing_all():
    """The multi-index search returns exactly the pairs a full pairwise comparison finds, at every distance up to
    NEAR_BITS, including clusters of similar hashes; a search over many images needs no cap."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 3000, dtype=np.int64).astype(np.uint64)
    near = base[:1200].copy()
    for k, h in enumerate(near):  # copies 0..NEAR_BITS+1 bits away (some just out of reach)
        for bit in rng.choice(64, k % (NEAR_BITS + 2), replace=False):
            h ^= np.uint64(1) << np.uint64(bit)
        near[k] = h
    hashes = np.concatenate([base, near])
    got = near_pairs(hashes, hashes, NEAR_BITS, chunk=512)
    got = {(int(a), int(b)) for a, b in got if a < b}
    dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    want = {(int(a), int(b)) for a, b in zip(*np.nonzero(dist <= NEAR_BITS), strict=True) if a < b}
    assert got == want and len(want) >= 1200 * (NEAR_BITS + 1) // (NEAR_BITS + 2)


def test_a_second_scan_reads_fingerprints_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    root = photo_set(tmp_path / "set")
    calls = []
    real = fp_module.fingerprint
    monkeypatch.setattr(fp_module, "fingerprint", lambda data: calls.append(1) or real(data))
    first = find_duplicates(open_dataset(root))
    assert len(calls) == 18
    calls.clear()
    photo_like(7).save(root / "val" / "cats" / "cats0.png")  # one file changes: only it is decoded again
    second = find_duplicates(open_dataset(root))
    assert len(calls) == 1 and first.groups == second.groups == []


@pytest.mark.slow
def test_clean_ants_bees_has_no_duplicates(hymenoptera):
    report = find_duplicates(open_dataset(hymenoptera))
    assert report.groups == [] and report.num_images == 397


def test_our_phash_is_imagehash_phash():
    """The fingerprint's pHash is imagehash's recipe computed from one decode: the same 64 bits on real pictures."""
    imagehash = pytest.importorskip("imagehash")
    rng = np.random.default_rng(0)
    for _ in range(5):
        img = Image.fromarray(rng.integers(0, 255, (40 + int(rng.integers(0, 40)), 50, 3), dtype=np.uint8))
        grey = np.asarray(img.convert("L").resize((32, 32), Image.LANCZOS))
        assert phash(grey) == int(str(imagehash.phash(img)), 16)
