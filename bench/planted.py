"""Generated images for duplicate detection: planted near-copies of a picture, distinct regular patterns, and
photo-like pictures. Used by bench/duplicates.py, bench/scale.py and tests/data/test_duplicates.py."""

from __future__ import annotations

import io
import itertools

import numpy as np
from PIL import Image, ImageDraw, ImageOps
from scipy.ndimage import gaussian_filter

COLOURS = [(0, 0, 0), (255, 255, 255), (200, 30, 30), (30, 60, 200), (240, 200, 40), (40, 160, 70)]


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def planted_copies(img: Image.Image) -> dict[str, Image.Image]:
    """The near-copies a dataset picks up in practice: resized to 60%, re-encoded at JPEG quality 50, cropped by
    4% on each side, mirrored left-right (each saved as JPEG, as collected copies are)."""
    img = img.convert("RGB")
    w, h = img.size
    dx, dy = round(0.04 * w), round(0.04 * h)
    return {"resized": _jpeg(img.resize((max(8, round(0.6 * w)), max(8, round(0.6 * h))), Image.BILINEAR), 90),
            "reencoded": _jpeg(img, 50),
            "cropped": _jpeg(img.crop((dx, dy, w - dx, h - dy)), 90),
            "mirrored": _jpeg(ImageOps.mirror(img), 90)}


def patterns(size: int = 256) -> dict[str, Image.Image]:
    """Distinct regular patterns, the pictures a perceptual hash cannot tell apart: vertical and horizontal stripes
    of several widths and colour pairs, grids and chequerboards of several cell sizes and colours."""
    out = {}
    y, x = np.mgrid[0:size, 0:size]
    pairs = [(COLOURS[0], COLOURS[1]), (COLOURS[2], COLOURS[1]), (COLOURS[3], COLOURS[4]), (COLOURS[5], COLOURS[0])]
    for (fg, bg), width in itertools.product(pairs, (8, 16, 32)):
        for name, on in (("vstripes", (x // width) % 2 == 0), ("hstripes", (y // width) % 2 == 0),
                         ("checker", ((x // width) + (y // width)) % 2 == 0),
                         ("grid", (x % (2 * width) < 3) | (y % (2 * width) < 3))):
            arr = np.where(on[..., None], np.array(fg, np.uint8), np.array(bg, np.uint8)).astype(np.uint8)
            out[f"{name}_{width}px_{fg}_{bg}"] = Image.fromarray(arr, "RGB")
    return out


def photo_like(seed: int, size: int = 96) -> Image.Image:
    """A picture with photo-like statistics: smooth colour fields at several scales plus fine noise, and a few
    ellipses (different seeds give unrelated pictures)."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((size, size, 3), np.float32)
    for cells, weight in ((2, 90.0), (4, 50.0), (8, 25.0)):
        field = rng.normal(0, 1, (cells, cells, 3)).astype(np.float32)
        chans = [np.asarray(Image.fromarray(field[..., c]).resize((size, size), Image.BICUBIC)) for c in range(3)]
        arr += weight * np.stack(chans, axis=-1)
    arr += 128 + rng.normal(0, 6, arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = rng.integers(0, size * 3 // 4, 2)
        r = int(rng.integers(size // 10, size // 4))
        draw.ellipse((int(x0), int(y0), int(x0) + r, int(y0) + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img


def brushed_metal(seed: int, gain: float = 1.0, size: int = 256) -> Image.Image:
    """A dark metal surface under the same light and with the same streaks for every seed (the camera's), and a
    mottling of its own (the seed's tile): different seeds look alike at thumbnail size, as different
    magnetic tiles do; `gain` re-exposes the same tile."""
    y, x = np.mgrid[0:size, 0:size] / size
    light = 60 + 70 * np.exp(-((x - 0.25) ** 2 + (y - 0.3) ** 2) / 0.05)
    streaks = np.repeat(np.random.default_rng(0).normal(0, 10, size // 4), 4)[None, :]
    own = gaussian_filter(np.random.default_rng(seed).normal(0, 1, (size, size)), 5)
    arr = gain * (light + streaks + 3.5 * own / own.std())
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGB")
