"""What duplicate search compares, per image: perceptual hashes to find candidates fast, and a small thumbnail to
confirm them. Cached per file content in the machine cache.

A fingerprint is one row of RECORD bytes: three 64-bit pHashes (of the picture, of its mirror image and of its
centre, CENTRE of each side: what a copy cropped a little shows) and a 32x32 colour thumbnail (for the
structural-similarity check in core/data/duplicates.py). The pHash is imagehash's recipe (DCT of the 32x32 grey
image, the 8x8 lowest frequencies against their median; the same bits as imagehash.phash), computed here from one
decode. Rows are keyed by the file's content hash (files.digest), so a file moved, renamed or shared by two
datasets is decoded once per machine.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from scipy.fft import dct

from core.data.images import to_rgb
from core.files.atomic import atomic_write_bytes
from core.files.cache import cache_root, evict_lru, locked, touch
from core.files.digest import bytes_digest

SIDE = 32  # thumbnail side (the pHash's input)
CENTRE = 0.92  # the centre hash's share of each side
RECORD = 24 + SIDE * SIDE * 3  # bytes per image
VERSION = "v1"  # part of the cache file name: a change of recipe starts a new file


def fingerprint(data: bytes) -> np.ndarray:
    """The RECORD-byte fingerprint of one image file's bytes (EXIF orientation applied, as training does)."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (4 * SIDE, 4 * SIDE))  # JPEG: decode at reduced scale, several times faster
        rgb = to_rgb(ImageOps.exif_transpose(img))
    grey = np.asarray(rgb.convert("L").resize((SIDE, SIDE), Image.LANCZOS), dtype=np.uint8)
    centre = np.asarray(rgb.convert("L").resize((SIDE, SIDE), Image.LANCZOS, box=centre_box(rgb.size)))
    thumb = np.asarray(rgb.resize((SIDE, SIDE), Image.LANCZOS), dtype=np.uint8)
    hashes = np.array([phash(grey), phash(grey[:, ::-1]), phash(centre)], dtype=np.uint64)
    return np.concatenate([hashes.view(np.uint8), thumb.ravel()])


def phash(grey: np.ndarray) -> int:
    """imagehash.phash on a 32x32 grey array: 64 bits, 1 where a low-frequency DCT coefficient is above their median."""
    low = dct(dct(grey.astype(np.float64), axis=0), axis=1)[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def centre_box(size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The centre CENTRE x CENTRE of an image of `size` (w, h), as a PIL box."""
    w, h = size
    mx, my = w * (1 - CENTRE) / 2, h * (1 - CENTRE) / 2
    return mx, my, w - mx, h - my


def unpack(records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pHashes N x 3: as is, mirrored, centre; thumbnails N x 32 x 32 x 3) of N records."""
    hashes = np.ascontiguousarray(records[:, :24]).view(np.uint64)
    return hashes, records[:, 24:].reshape(len(records), SIDE, SIDE, 3)


class FingerprintCache:
    """content hash -> fingerprint, one .npz of sorted keys and rows in the machine cache (core/files/cache.py).
    Saving merges with what other processes saved meanwhile, under a file lock, and writes atomically; the
    cache folder stays under its size bound (least recently used files go first)."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_root() / "fingerprints" / f"{VERSION}.npz"
        self.keys, self.rows = self._read()
        self.new: dict[str, np.ndarray] = {}
        if len(self.keys):
            touch(self.path)

    def _read(self) -> tuple[np.ndarray, np.ndarray]:
        empty = np.zeros(0, dtype="S32"), np.zeros((0, RECORD), dtype=np.uint8)
        if not self.path.exists():
            return empty
        try:
            with np.load(self.path) as z:
                keys, rows = z["keys"], z["rows"]
        except (OSError, ValueError, KeyError):  # a damaged cache is rebuilt, never trusted
            return empty
        return (keys, rows) if rows.shape[1:] == (RECORD,) and len(keys) == len(rows) else empty

    def lookup(self, digests: list[str]) -> list[np.ndarray | None]:
        if not len(self.keys) or not digests:
            return [None] * len(digests)
        wanted = np.array(digests, dtype="S32")
        pos = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        hit = self.keys[pos] == wanted
        return [self.rows[p] if h else None for p, h in zip(pos, hit, strict=True)]

    def put(self, digest: str, row: np.ndarray) -> None:
        self.new[digest] = row

    def save(self) -> None:
        if not self.new:
            return
        with locked(self.path):
            keys, rows = self._read()  # another process may have saved rows since we read
            keys = np.concatenate([keys, np.array(list(self.new), dtype="S32")])
            rows = np.concatenate([rows, np.stack(list(self.new.values()))])
            keys, first = np.unique(keys, return_index=True)  # sorted, one row per key
            rows = rows[first]
            buf = io.BytesIO()
            np.savez(buf, keys=keys, rows=rows)
            atomic_write_bytes(self.path, buf.getvalue())
        self.keys, self.rows, self.new = keys, rows, {}
        evict_lru(self.path.parent.parent, keep=self.path)


class Gathered:
    """Content hashes and fingerprints gathered by a pass that reads every image anyway (a run's decoding), so the
    duplicate search and the run record at its end read no file a second time. `add` is called from the reading
    pass's worker threads with the bytes they read; fingerprints come from the machine cache where it knows the
    content, else from those bytes (the same recipe as `fingerprints`: the same rows)."""

    def __init__(self):
        self.cache = FingerprintCache()
        self.digests: dict[str, str] = {}  # path -> content hash
        self.rows: dict[str, np.ndarray | None] = {}  # path -> fingerprint (None: not decodable)
        self._lock = threading.Lock()

    def add(self, path: str, data: bytes, digest: str | None = None) -> None:
        digest = digest or bytes_digest(data)
        row = self.cache.new.get(digest)  # a copy of a file this pass saw already
        row = self.cache.lookup([digest])[0] if row is None else row
        if row is None and (row := _fingerprint_or_none(data)) is not None:
            with self._lock:
                self.cache.put(digest, row)
        with self._lock:
            self.digests[path], self.rows[path] = digest, row


def _fingerprint_or_none(data: bytes) -> np.ndarray | None:
    try:
        return fingerprint(data)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def fingerprints(paths: list[str], progress: Callable[[int, int], None] | None = None, workers: int = 2,
                 gathered: Gathered | None = None) -> tuple[list[str | None], np.ndarray, np.ndarray]:
    """(content hash per path, None if unreadable; the indices of the readable ones; their fingerprints, one row
    each). Each file is read once (hash and decode from the same bytes); known contents come from the cache, files
    a reading pass already saw from `gathered` (not read again)."""
    cache = gathered.cache if gathered is not None else FingerprintCache()
    digests: list[str | None] = [None] * len(paths)
    rows: list[np.ndarray | None] = [None] * len(paths)
    datas: dict[int, bytes] = {}
    seen = gathered.digests if gathered is not None else {}
    for i, path in enumerate(paths):
        if path in seen:
            rows[i] = gathered.rows[path]
            digests[i] = seen[path] if rows[i] is not None else None

    def read(i: int) -> None:
        try:
            data = Path(paths[i]).read_bytes()
        except OSError:  # gone or unreadable now: the scan lists such files; it is not a duplicate of anything
            return
        digests[i] = bytes_digest(data)
        datas[i] = data

    def decode(i: int) -> None:
        rows[i] = _fingerprint_or_none(datas.pop(i))
        if rows[i] is None:
            digests[i] = None
        else:
            cache.put(digests[i], rows[i])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), 256):  # bounded memory: 256 files' bytes at a time
            idx = [i for i in range(start, min(start + 256, len(paths))) if paths[i] not in seen]
            list(pool.map(read, idx))
            known = [i for i in idx if digests[i] is not None]
            for i, row in zip(known, cache.lookup([digests[i] for i in known]), strict=True):
                if row is not None:
                    rows[i] = row
                    datas.pop(i)
            list(pool.map(decode, list(datas)))
            done = min(start + 256, len(paths))
            if progress:
                progress(done, len(paths))
    cache.save()
    ok = np.array([i for i, r in enumerate(rows) if r is not None and digests[i] is not None], dtype=np.int64)
    table = np.stack([rows[i] for i in ok]) if len(ok) else np.zeros((0, RECORD), dtype=np.uint8)
    return digests, ok, table
