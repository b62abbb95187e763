"""Opening and decoding images: once per image, into compact uint8 arrays that augmentation then works on.

Two decode paths, both giving an N x resize x resize x 3 uint8 array around timm's eval centre crop:
- exact (validation, export parity): PIL, with torchvision's Resize + CenterCrop arithmetic, so the centre crop
  is bit-identical to what timm's eval transform feeds the model;
- fast (training images): JPEGs decode through torchvision's libjpeg-turbo binding (the same pixels as PIL,
  less overhead) or, for photos at least twice the target size, at 1/2, 1/4 or 1/8 scale inside the JPEG
  decoder (PIL's `draft`); then torch's antialiased uint8 resize replaces PIL's (it differs by at most 2
  levels in ~0.4% of pixels). `python -m bench --decode` measures both (docs/measurements.md). Training images only
  pass through augmentation: exactness buys nothing there.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps

from core.data.dataset import Sample, Skipped

PROGRESS_EVERY = 256  # images decoded between progress reports
_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
             "lanczos": Image.LANCZOS}
_TORCH_MODES = ("bicubic", "bilinear")  # the antialiased uint8 kernels torch has

# torchvision 0.29 (pinned) deprecates its image decoders in favour of TorchCodec, warning on every call;
# _decode_jpeg_turbo falls back to PIL if a later torchvision drops them.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB with its EXIF orientation applied, from any PIL mode."""
    img = Image.open(path)
    img = ImageOps.exif_transpose(img)
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit/float greyscale: scale the real range to 0..255 instead of clipping to white.
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent -> white
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_one(path: str, resize: int, crop: int, interpolation: str = "bicubic",
               exact: bool = True, data: bytes | None = None) -> np.ndarray:
    """Decode an image into a resize x resize uint8 HWC array around timm's eval centre crop.

    The arithmetic copies torchvision's Resize(resize) + CenterCrop(crop) exactly; with exact=True the centre
    crop of this array is bit-identical to what timm's eval transform feeds the model (export parity depends
    on it). The margin around it is room for random-crop augmentation. exact=False is the fast path of the
    module docstring. `data`, the file's bytes when the caller has read them already, saves a second read.
    """
    fast = not exact and interpolation in _TORCH_MODES
    if data is None and fast:  # read once: PIL parses the header from these bytes and libjpeg-turbo decodes them
        with open(path, "rb") as fh:
            data = fh.read()
    source = io.BytesIO(data) if data is not None else path
    with Image.open(source) as img:
        x = _decode_jpeg_turbo(source.getbuffer()) if fast and img.format == "JPEG" \
            and min(img.size) < 2 * resize else None
        if x is None:
            if fast and min(img.size) >= 2 * resize:
                scale = resize / min(img.size)  # JPEG: decode at 1/2, 1/4 or 1/8 scale, still >= the target
                img.draft(None, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
            img = to_rgb(ImageOps.exif_transpose(img))
            if not fast:
                nw, nh = _resized(img.width, img.height, resize)
                left, top = _crop_origin(nw, nh, resize, crop)
                img = img.resize((nw, nh), _RESAMPLE.get(interpolation, Image.BICUBIC))
                return np.asarray(img.crop((left, top, left + resize, top + resize)), dtype=np.uint8)
            x = torch.from_numpy(np.array(img)).permute(2, 0, 1)
    nw, nh = _resized(x.shape[2], x.shape[1], resize)
    left, top = _crop_origin(nw, nh, resize, crop)
    x = F.interpolate(x[None], size=(nh, nw), mode=interpolation, antialias=True)[0]
    return x[:, top:top + resize, left:left + resize].permute(1, 2, 0).numpy().copy()


def _decode_jpeg_turbo(data: memoryview) -> torch.Tensor | None:
    """CHW uint8 RGB via torchvision's libjpeg-turbo decoder: the same pixels as PIL's (checked on 120 photos,
    CMYK, greyscale and EXIF-rotated files) with less overhead per image (`python -m bench --decode`).
    None when it cannot decode the file (truncated, or torchvision without it): PIL then decides."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                           apply_exif_orientation=True)
    except (ImportError, RuntimeError):
        return None


def _resized(w: int, h: int, resize: int) -> tuple[int, int]:
    """torchvision Resize(int): the short side becomes `resize`, the long side keeps the aspect (floored)."""
    return (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)


def _crop_origin(nw: int, nh: int, resize: int, crop: int) -> tuple[int, int]:
    """Top-left of the resize x resize window whose centre crop is torchvision's CenterCrop(crop)."""
    margin = (resize - crop) // 2
    left = min(max(int(round((nw - crop) / 2.0)) - margin, 0), nw - resize)
    top = min(max(int(round((nh - crop) / 2.0)) - margin, 0), nh - resize)
    return left, top


def decode_images(samples: list[Sample], resize: int, crop: int, interpolation: str = "bicubic",
                  workers: int | None = None, out: np.ndarray | None = None, exact: bool = True,
                  progress: Callable[[int, int], None] | None = None,
                  on_read: Callable[[str, bytes, None], None] | None = None) -> tuple[np.ndarray, list[Skipped]]:
    """Decode every sample once into an N x resize x resize x 3 uint8 array (or into `out`, e.g. a memmap).

    Images that fail (truncated, corrupt) are left black and returned as Skipped so callers can drop them.
    `workers` defaults to torch's thread count (the machine's cores, see core.device.set_threads).
    `on_read(path, bytes, None)`, when given, is called in the worker with each file's bytes, which are then
    decoded (one read per file; a run gathers its duplicate search's fingerprints there).
    """
    workers = max(1, workers or torch.get_num_threads())  # read before one_torch_thread() sets it to 1
    arr = out if out is not None else np.zeros((len(samples), resize, resize, 3), dtype=np.uint8)
    failed: list[Skipped] = []

    def work(i: int) -> None:
        data = None
        if on_read is not None:
            try:
                data = Path(samples[i].path).read_bytes()
            except OSError as exc:
                failed.append(Skipped(samples[i].path, f"could not be read ({exc.strerror or exc})"))
                return
            on_read(samples[i].path, data, None)
        got = decode_or_skip(samples[i], resize, crop, interpolation, exact, data)
        if isinstance(got, Skipped):
            failed.append(got)
        else:
            arr[i] = got

    with strict_truncation(), one_torch_thread(), ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(samples), PROGRESS_EVERY):  # chunks, so long decodes report progress
            list(pool.map(work, range(start, min(start + PROGRESS_EVERY, len(samples)))))  # both paths free the GIL
            if progress:
                progress(min(start + PROGRESS_EVERY, len(samples)), len(samples))
    return arr, failed


def decode_or_skip(sample: Sample, resize: int, crop: int, interpolation: str = "bicubic",
                   exact: bool = True, data: bytes | None = None) -> np.ndarray | Skipped:
    """decode_one, or the reason it failed: an undecodable file is reported and skipped, never fatal."""
    try:
        return decode_one(sample.path, resize, crop, interpolation, exact, data)
    except Exception as exc:
        return Skipped(sample.path, f"could not be decoded ({type(exc).__name__}: {exc})")


@contextlib.contextmanager
def strict_truncation() -> Iterator[None]:
    """A truncated JPEG is an error, not a half-grey training image (PIL's global flag, restored after)."""
    prev = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = prev


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """For pools of decode workers: the workers are the parallelism, so torch ops inside them (the fast path's
    resize) run on one thread each instead of each spreading over every core (oversubscribed; measured 5-10%
    slower decoding, and slower ONNX Runtime sessions beside it). Also a probe head's epochs, whose tiny steps a
    second thread only slows down (bitwise the same weights). The thread count is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def geometry(data_cfg: dict) -> tuple[int, int, str]:
    """(resize, crop, interpolation) exactly as timm's eval transform: Resize(floor(crop/crop_pct)), crop."""
    crop = int(data_cfg["input_size"][-1])
    return math.floor(crop / data_cfg.get("crop_pct", 1.0)), crop, data_cfg.get("interpolation", "bicubic")
