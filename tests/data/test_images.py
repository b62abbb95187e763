"""Decoding: the fast path (training images) stays close to the exact one (validation, export parity)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.dataset import Sample
from core.data.images import decode_images, decode_one
from tests.conftest import COLORS, make_image


def test_fast_decode_is_close_to_exact_on_real_photos(hymenoptera):
    paths = sorted((hymenoptera / "train" / "bees").glob("*.jpg"))[:24]
    for p in paths:
        exact = decode_one(str(p), 256, 224).astype(int)
        fast = decode_one(str(p), 256, 224, exact=False).astype(int)
        assert fast.shape == exact.shape == (256, 256, 3)
        assert np.abs(fast - exact).mean() < 1.0, p.name


def _quadrants(path: Path, size: tuple[int, int], orientation: int | None = None) -> Path:
    """Four flat colour quadrants (so a wrong rotation or crop shows), saved as a JPEG."""
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 2, : w // 2], arr[: h // 2, w // 2:] = COLORS["red"], COLORS["green"]
    arr[h // 2:, : w // 2], arr[h // 2:, w // 2:] = COLORS["blue"], (240, 240, 240)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.fromarray(arr).save(path, quality=92, exif=exif)
    return path


@pytest.mark.parametrize("orientation", [None, 6])
def test_large_photo_fast_decode_matches_exact(tmp_path, orientation):
    # 2400x1800: the fast path decodes it at a quarter of the size (JPEG DCT scaling), then resizes
    path = _quadrants(tmp_path / "big.jpg", (2400, 1800), orientation)
    exact = decode_one(str(path), 256, 224).astype(int)
    fast = decode_one(str(path), 256, 224, exact=False).astype(int)
    assert fast.shape == exact.shape == (256, 256, 3)
    assert np.abs(fast - exact).mean() < 2.0
    corner = exact[10, 10]  # top-left after orientation: red, or blue when rotated 90 degrees
    assert np.abs(corner - (COLORS["blue"] if orientation == 6 else COLORS["red"])).max() < 12


@pytest.mark.parametrize("mode", ["CMYK", "L", "RGB"])
def test_fast_decode_of_cmyk_grey_and_rgb_jpegs(tmp_path, mode):
    # 200 px: full-size decode, same pixels as PIL; only the resize differs (by a level here and there)
    path = make_image(tmp_path / f"x_{mode}.jpg", COLORS["green"], size=200, mode=mode)
    exact = decode_one(str(path), 128, 112).astype(int)
    assert np.abs(decode_one(str(path), 128, 112, exact=False) - exact).mean() < 0.05
    # 300 px: decoded at half size by the JPEG decoder; the noise resamples differently, the colours do not
    path = make_image(tmp_path / f"y_{mode}.jpg", COLORS["green"], size=300, mode=mode)
    exact = decode_one(str(path), 128, 112).astype(float)
    fast = decode_one(str(path), 128, 112, exact=False).astype(float)
    assert np.abs(fast.mean((0, 1)) - exact.mean((0, 1))).max() < 1.0


def test_fast_decode_reports_a_truncated_jpeg(tmp_path):
    good = make_image(tmp_path / "a" / "ok.jpg", COLORS["red"], size=200)
    cut = make_image(tmp_path / "a" / "cut.jpg", COLORS["red"], size=200)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    arr, failed = decode_images([Sample(str(good), 0), Sample(str(cut), 0)], 72, 64, exact=False)
    assert [Path(f.path).name for f in failed] == ["cut.jpg"] and "could not be decoded" in failed[0].reason
    assert arr[0].mean() > 20 and arr[1].max() == 0  # the good one decoded, the bad row left black
