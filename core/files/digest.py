"""Content digests: the keys of every cache (features, extracted zips, uploads), and the SHA-256 an export's check
records."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: Path) -> str:
    """The content hash that keys caches; equal to bytes_digest of the file's bytes."""
    return _hash_file(path, hashlib.blake2b(digest_size=16))


def sha256_file(path: Path) -> str:
    """The SHA-256 an export's check records (what a user compares with sha256sum)."""
    return _hash_file(path, hashlib.sha256())


def _hash_file(path: Path, h) -> str:
    """Feed the file to the hashlib object `h` in 1 MB chunks (any file size, little memory)."""
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def bytes_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()
