"""A corpus of bad inputs, generated here: each gets a clear message and a safe outcome.

Every dataset test starts from a valid 2-class set of 12 images and adds one bad thing; the valid images
must still count, and nothing may be written outside the folder the dataset is extracted into.
"""

import io
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.config import TrainConfig
from core.data.dataset import open_dataset
from core.data.images import decode_images, load_image
from core.errors import DatasetError, WeightsError
from core.models.backbones import create_model
from tests.conftest import COLORS, make_image

VALID = 12


@pytest.fixture
def base(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i in range(6):
        make_image(root / "cats" / f"c{i}.png", COLORS["red"], seed=i)
        make_image(root / "dogs" / f"d{i}.png", COLORS["blue"], seed=i)
    return root


def scan(root: Path):
    ds = open_dataset(root, val_fraction=0.25)
    return ds, {Path(s.path).name: s.reason for s in ds.skipped}


def zip_from(base: Path, dest: Path, extra: dict[str, bytes] | None = None,
             infos: list[tuple[zipfile.ZipInfo, bytes]] | None = None) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(base.rglob("*.png")):
            zf.write(p, f"data/{p.relative_to(base)}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
        for info, data in infos or []:
            zf.writestr(info, data)
    return dest


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")}


# ---- zips -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../evil.png", "data/../../evil.png", "/tmp/transferlab-abs-evil.png"])
def test_zip_slip_is_refused_and_nothing_is_written(base, tmp_path, name):
    z = zip_from(base, tmp_path / "up.zip", extra={name: b"x"})
    before = files_under(tmp_path)
    with pytest.raises(DatasetError, match=r"unsafe path .*refused"):
        open_dataset(z, extract_dir=tmp_path / "ws" / "extracted")
    assert files_under(tmp_path) == before
    assert not Path("/tmp/transferlab-abs-evil.png").exists()


def test_symlink_in_zip_is_refused(base, tmp_path):
    info = zipfile.ZipInfo("data/cats/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = zip_from(base, tmp_path / "up.zip", infos=[(info, b"/etc/passwd")])
    with pytest.raises(DatasetError, match="symbolic link 'data/cats/link.png'; links are refused"):
        open_dataset(z, extract_dir=tmp_path / "ws")
    assert not (tmp_path / "ws").exists() or not any((tmp_path / "ws").rglob("*.png"))


def test_zip_bomb_is_refused_before_extraction(base, tmp_path):
    z = zip_from(base, tmp_path / "up.zip", extra={"data/cats/bomb.png": b"\0" * 60_000_000})
    with pytest.raises(DatasetError, match=r"possible zip bomb. Limits: 8 GiB and 200:1"):
        open_dataset(z, extract_dir=tmp_path / "ws")
    assert not (tmp_path / "ws").exists()


def test_one_bomb_among_real_photos_is_refused(base, tmp_path):
    photos = {f"data/cats/real{i}.bin": np.random.default_rng(i).bytes(2_000_000) for i in range(4)}
    z = zip_from(base, tmp_path / "up.zip", extra={**photos, "data/dogs/bomb.png": b"\0" * 30_000_000})
    with pytest.raises(DatasetError, match=r"data/dogs/bomb.png alone \d+:1\); refused as a possible zip bomb"):
        open_dataset(z, extract_dir=tmp_path / "ws")


def test_nested_zip_is_skipped_with_reason(base, tmp_path):
    inner = zip_from(base, tmp_path / "inner.zip")
    z = zip_from(base, tmp_path / "up.zip", extra={"data/cats/more.zip": inner.read_bytes()})
    ds, reasons = scan_zip(z, tmp_path)
    assert "zip inside the dataset is not opened" in reasons["more.zip"]
    assert len(ds.train) + len(ds.val) == VALID


def scan_zip(z: Path, tmp_path: Path):
    ds = open_dataset(z, val_fraction=0.25, extract_dir=tmp_path / "ws")
    return ds, {Path(s.path).name: s.reason for s in ds.skipped}


def test_non_zip_named_zip(tmp_path):
    (tmp_path / "photos.zip").write_bytes(b"\xff\xd8\xff\xe0 this is a jpeg really")
    with pytest.raises(DatasetError, match="photos.zip is not a valid zip archive.*upload it again"):
        open_dataset(tmp_path / "photos.zip", extract_dir=tmp_path / "ws")


def test_empty_zip(tmp_path):
    with zipfile.ZipFile(tmp_path / "empty.zip", "w"):
        pass
    with pytest.raises(DatasetError, match="empty.zip is empty. Zip a folder that holds one folder per class"):
        open_dataset(tmp_path / "empty.zip", extract_dir=tmp_path / "ws")


def test_very_long_names_in_zip_are_shortened(base, tmp_path):
    long_name = "a" * 300 + ".png"
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(buf, "PNG")
    z = zip_from(base, tmp_path / "up.zip", extra={f"data/cats/{long_name}": buf.getvalue()})
    ds, reasons = scan_zip(z, tmp_path)
    assert not reasons and len(ds.train) + len(ds.val) == VALID + 1


# ---- images -----------------------------------------------------------------------------------------

def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("name,content,reason", [
    ("notes.txt", b"hello", "not an image file type (.txt)"),
    ("empty.jpg", b"", "empty file (0 bytes)"),
    ("garbage.jpg", b"\x00\x01 not a jpeg", "not a readable image"),
    ("huge.png", png_header_only(30000, 30000), "larger than 64 megapixels (possible decompression bomb)"),
])
def test_unusable_files_are_skipped_with_reason(base, name, content, reason):
    (base / "cats" / name).write_bytes(content)
    ds, reasons = scan(base)
    assert reason in reasons[name]
    assert len(ds.train) + len(ds.val) == VALID


def test_animated_gif_is_skipped(base):
    frames = [Image.new("RGB", (30, 30), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(base / "cats" / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    ds, reasons = scan(base)
    assert "GIF" in reasons["anim.gif"] and len(ds.train) + len(ds.val) == VALID


def test_truncated_jpeg_is_reported_and_the_run_goes_on(base, tmp_path):
    full = make_image(base / "cats" / "cut.jpg", COLORS["red"], size=200)
    full.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    ds, _ = scan(base)
    _, failed = decode_images(ds.train + ds.val, 72, 64)
    assert [Path(f.path).name for f in failed] == ["cut.jpg"] and "could not be decoded" in failed[0].reason
    from core.engine.train import train
    result = train(TrainConfig(data=str(base), backbone="test_efficientnet", weights="random", img_size=64,
                               freeze="partial", epochs=1, batch_size=4, output_dir=str(tmp_path / "runs"),
                               val_fraction=0.25))
    assert result.status == "completed"
    assert any(p.endswith("cut.jpg") for p in result.summary.skipped)
    assert result.summary.num_train + result.summary.val.num == VALID


@pytest.mark.parametrize("kind", ["png16", "cmyk", "palette_transparent", "grayscale", "exif_rotated"])
def test_odd_but_valid_images_are_used(base, kind):
    path = base / "cats" / f"odd_{kind}.{'jpg' if kind in ('cmyk', 'exif_rotated') else 'png'}"
    arr = (np.arange(48 * 64).reshape(48, 64) % 256).astype(np.uint8)
    if kind == "png16":
        Image.fromarray(arr.astype(np.uint16) * 257).save(path)
    elif kind == "cmyk":
        Image.fromarray(np.stack([arr] * 3, -1)).convert("CMYK").save(path)
    elif kind == "palette_transparent":
        img = Image.fromarray(arr).convert("P")
        img.info["transparency"] = 0
        img.save(path, transparency=0)
    elif kind == "grayscale":
        Image.fromarray(arr, "L").save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = 8
        Image.fromarray(np.stack([arr] * 3, -1)).save(path, exif=exif)
    ds, reasons = scan(base)
    assert not reasons and len(ds.train) + len(ds.val) == VALID + 1
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.size == ((48, 64) if kind == "exif_rotated" else (64, 48))


# ---- dataset structure --------------------------------------------------------------------------------

def test_one_class_only(tmp_path):
    for i in range(5):
        make_image(tmp_path / "only" / f"{i}.png", COLORS["red"])
    with pytest.raises(DatasetError, match=r"Only one class \(only\) has images.*at least two class folders"):
        open_dataset(tmp_path)


def test_class_with_zero_or_one_image(base):
    (base / "empty").mkdir()
    make_image(base / "single" / "s.png", COLORS["green"])
    ds, _ = scan(base)
    assert ds.classes == ["cats", "dogs", "single"]
    text = " ".join(ds.warnings)
    assert "Class folder 'empty' holds no usable images and is left out." in text
    assert "Class 'single' has only 1 training image(s)" in text


def test_spaces_and_non_ascii_class_names(tmp_path):
    for name in ("Grüne Äpfel", "紅い りんご"):
        for i in range(4):
            make_image(tmp_path / name / f"bild {i}.png", COLORS["green"], seed=i)
    ds, _ = scan(tmp_path)
    assert ds.classes == sorted(["Grüne Äpfel", "紅い りんご"])


def test_hidden_entries_are_ignored(base):
    for junk in ("__MACOSX/cats/._c0.png", "cats/.DS_Store", "cats/Thumbs.db", ".ipynb_checkpoints/x.png",
                 "dogs/.ipynb_checkpoints/d0-checkpoint.png"):
        (base / junk).parent.mkdir(parents=True, exist_ok=True)
        (base / junk).write_bytes(b"junk")
    ds, reasons = scan(base)
    assert ds.classes == ["cats", "dogs"] and not reasons and len(ds.train) + len(ds.val) == VALID


def test_duplicate_file_names_in_different_folders(tmp_path):
    for c, color in (("a", COLORS["red"]), ("b", COLORS["blue"])):
        for i in range(4):
            make_image(tmp_path / c / f"img{i}.png", color, seed=i)
    ds, _ = scan(tmp_path)
    assert len({s.path for s in ds.train + ds.val}) == 8


# ---- weights and configs ------------------------------------------------------------------------------

def test_truncated_safetensors(tmp_path):
    from safetensors.torch import save_file
    model = create_model(TrainConfig(weights="random"), 2)
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="w.safetensors could not be read as weights"):
        create_model(TrainConfig(weights=str(tmp_path / "w.safetensors")), 2)
