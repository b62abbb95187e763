import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.dataset import open_dataset
from core.data.images import decode_images, load_image
from core.errors import DatasetError
from tests.conftest import COLORS, make_image


def test_folder_layout_split_is_stratified_and_seeded(tiny_folder):
    ds = open_dataset(tiny_folder, val_fraction=0.25, seed=1)
    assert ds.classes == ["blue", "green", "red"]
    assert ds.counts() == {"train": {c: 6 for c in ds.classes}, "val": {c: 2 for c in ds.classes}}
    again = open_dataset(tiny_folder, val_fraction=0.25, seed=1)
    other = open_dataset(tiny_folder, val_fraction=0.25, seed=2)
    assert [s.path for s in again.val] == [s.path for s in ds.val]
    assert [s.path for s in other.val] != [s.path for s in ds.val]


def test_split_layout_with_test(tmp_path):
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        for c in ("cat", "dog"):
            for i in range(n):
                make_image(tmp_path / "ds" / split / c / f"{i}.jpg", COLORS["red" if c == "cat" else "blue"])
    ds = open_dataset(tmp_path / "ds")
    assert ds.layout == "splits"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (12, 4, 4)


def test_zip_with_top_folder_and_macos_junk(tiny_folder, tmp_path):
    z = tmp_path / "upload.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in tiny_folder.rglob("*.png"):
            zf.write(p, f"colors/{p.relative_to(tiny_folder)}")
        zf.writestr("__MACOSX/colors/._red_0.png", b"junk")
        zf.writestr("colors/red/.DS_Store", b"junk")
    ds = open_dataset(z, extract_dir=tmp_path / "extracted")
    assert ds.classes == ["blue", "green", "red"]
    assert len(ds.train) + len(ds.val) == 24
    assert not ds.skipped


def test_unreadable_files_are_skipped_with_reason(tiny_folder):
    (tiny_folder / "red" / "notes.txt").write_text("hello")
    (tiny_folder / "red" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tiny_folder / "red" / "empty.png").write_bytes(b"")
    Image.new("RGB", (20, 20)).save(tiny_folder / "green" / "placeholder.gif")
    ds = open_dataset(tiny_folder)
    reasons = {Path(s.path).name: s.reason for s in ds.skipped}
    assert "not an image file type (.txt)" in reasons["notes.txt"]
    assert "not a readable image" in reasons["broken.jpg"]
    assert "empty file" in reasons["empty.png"]
    assert "GIF" in reasons["placeholder.gif"]
    assert len(ds.train) + len(ds.val) == 24  # every valid image still counts


def test_truncated_jpeg_is_reported_at_decode(tiny_folder):
    good = make_image(tiny_folder / "red" / "big.jpg", COLORS["red"], size=200)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    ds = open_dataset(tiny_folder, val_fraction=0.2)
    arr, failed = decode_images(ds.train + ds.val, 72, 64)
    assert [Path(f.path).name for f in failed] == ["big.jpg"]
    assert arr.shape[1:] == (72, 72, 3)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16"])
def test_any_pil_mode_becomes_rgb(tmp_path, mode):
    arr = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8)
    img = Image.fromarray(arr, "L")
    img = img.convert(mode) if mode != "I;16" else Image.fromarray(arr.astype(np.uint16) * 250)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (32, 32)
    if mode == "I;16":  # 16-bit range is rescaled, not clipped to white
        assert np.asarray(out).max() == 255 and np.asarray(out).min() == 0


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (20, 40)


def test_warnings_for_small_and_imbalanced_classes(tmp_path):
    for i in range(30):
        make_image(tmp_path / "big" / f"{i}.png", COLORS["red"], seed=i)
    for i in range(3):
        make_image(tmp_path / "small" / f"{i}.png", COLORS["blue"], seed=i)
    ds = open_dataset(tmp_path, val_fraction=0.2)
    text = " ".join(ds.warnings)
    assert "'small' has only 2 training image(s)" in text
    assert "Heavy class imbalance" in text


def test_one_class_is_an_error(tmp_path):
    for i in range(4):
        make_image(tmp_path / "only" / f"{i}.png", COLORS["red"])
    with pytest.raises(DatasetError, match="Only one class"):
        open_dataset(tmp_path)


def test_no_class_folders_is_an_error(tmp_path):
    make_image(tmp_path / "a.png", COLORS["red"])
    with pytest.raises(DatasetError, match="No class folders"):
        open_dataset(tmp_path)


def test_sample_data_lists_the_gif_placeholder(hymenoptera):
    ds = open_dataset(hymenoptera)
    assert [Path(s.path).name for s in ds.skipped] == ["imageNotFound.gif"]
    assert ds.counts() == {"train": {"ants": 123, "bees": 121}, "val": {"ants": 70, "bees": 83}}
