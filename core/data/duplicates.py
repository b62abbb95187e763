"""Duplicates and leakage between splits, found before training, at any dataset size.

Exact duplicates share a content hash (the bytes). Near-duplicates are the same picture resized, re-encoded,
cropped a little or mirrored; two signals must agree before two images are called that:

1. candidates: their pHashes (core/data/fingerprints.py) differ in at most NEAR_BITS of 64 bits, one of them
   taken as is, mirrored, or of its centre (a copy cropped a little). Found without comparing every pair:
   multi-index hashing splits each hash into 4 bands of 16 bits; two hashes within 11 bits agree within 2 bits
   on at least one band (pigeonhole), so each image looks up 137 buckets per band (`near_pairs`).
2. confirmation: their 32x32 colour thumbnails, one as is, mirrored or its centre enlarged, have a structural
   similarity (SSIM, 7x7 windows, the lowest of the three channels) of at least MIN_SSIM, and their 8x8 block
   averages differ by at most MAX_COLOUR_DIFF grey levels, and their fine detail agrees overall (MIN_DETAIL) and
   block by block (MIN_LOCAL, `local_detail`). A pHash alone cannot tell a copy from a pattern: stripes of any
   colour and width, grids and chequerboards hash alike; their thumbnails do not. Nor can SSIM and overall
   detail tell two different surfaces under the same light (dark brushed-metal tiles): the light and streaks are
   shared, the marks of each tile are not, and blocks without the marks' agreement fail `local_detail`.

An image joins a group only as a confirmed near-duplicate of the group's representative (`star_groups`), so a
chain of look-alikes never joins unrelated images. A validation image that has a copy in the training set is
leaked: the score on it overstates what the model does on new photos. Thresholds: docs/decisions.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

from core.data.dataset import Dataset
from core.data.fingerprints import CENTRE, Gathered, fingerprints, unpack
from core.files.paths import relative_path

NEAR_BITS = 10  # candidates: pHashes this close (docstring); thresholds measured in docs/decisions.md
MIN_SSIM = 0.75  # confirmation: thumbnails' structural similarity, lowest colour channel
MAX_COLOUR_DIFF = 15.0  # confirmation: grey levels, mean over 8x8 blocks and channels
MIN_DETAIL = 0.75  # confirmation: correlation of the thumbnails' detail (`measures`)
MIN_LOCAL = 0.9  # confirmation: the same detail agrees block by block (`local_detail`)
SPLIT_ORDER = ("train", "val", "test")
BANDS, BAND_BITS, RADIUS = 4, 16, 2  # multi-index hashing: finds every pair within BANDS * (RADIUS + 1) - 1 bits


@dataclass(frozen=True)
class Member:
    split: str
    path: str  # relative to the dataset root
    label: str


@dataclass(frozen=True)
class DuplicateGroup:
    kind: str  # "exact": same bytes; "near": same picture, confirmed by pHash and thumbnails
    members: list[Member]

    @property
    def splits(self) -> set[str]:
        return {m.split for m in self.members}

    @property
    def leaks(self) -> bool:
        """Spans training and an evaluated split."""
        return "train" in self.splits and len(self.splits) > 1


@dataclass
class DuplicateReport:
    groups: list[DuplicateGroup] = field(default_factory=list)
    num_images: int = 0

    def leaked(self, split: str = "val") -> list[str]:
        """Paths of `split` images with a copy in train (what 'drop from validation' removes)."""
        return sorted({m.path for g in self.groups if g.leaks for m in g.members if m.split == split})

    def summary(self) -> dict:
        """The small dict RunSummary.leakage and the CLI print."""
        return {"groups": len(self.groups), "exact_groups": sum(g.kind == "exact" for g in self.groups),
                "near_groups": sum(g.kind == "near" for g in self.groups),
                "leaked_val": len(self.leaked("val")), "leaked_test": len(self.leaked("test")),
                "num_images": self.num_images}

    def to_dict(self) -> dict:
        return {"summary": self.summary(), "groups": [asdict(g) for g in self.groups]}


def find_duplicates(ds: Dataset, progress: Callable[[int, int], None] | None = None,
                    workers: int = 2, gathered: Gathered | None = None) -> DuplicateReport:
    """Groups of exact and near-duplicate images within and across train/val/test (`gathered`: the hashes and
    fingerprints of the files a run's decoding read, see fingerprints.Gathered)."""
    root = Path(ds.root)
    items = [(split, s) for split in SPLIT_ORDER for s in getattr(ds, split)]
    digests, ok, table = fingerprints([s.path for _, s in items], progress, workers, gathered)
    members = [Member(split, relative_path(s.path, root), ds.classes[s.label]) for split, s in items]
    by_digest: dict[str, list[int]] = {}
    for i in ok:
        by_digest.setdefault(digests[i], []).append(int(i))
    groups = [DuplicateGroup("exact", [members[i] for i in idx]) for idx in by_digest.values() if len(idx) > 1]
    first = {d: k for k, d in enumerate(digests[i] for i in ok)}  # one fingerprint per distinct content
    unique = sorted(first.values())
    copies = [by_digest[digests[ok[k]]] for k in unique]
    for clique in near_groups(table[unique]):
        groups.append(DuplicateGroup("near", [members[i] for k in clique for i in copies[k]]))
    groups.sort(key=lambda g: (not g.leaks, g.kind, g.members[0].path))
    return DuplicateReport(groups, len(items))


def near_groups(table: np.ndarray) -> list[list[int]]:
    """Groups (row indices, at least 2 each) of confirmed near-duplicates among fingerprints (`star_groups`)."""
    hashes, thumbs = unpack(table)
    full = np.ascontiguousarray(hashes[:, 0])
    found = [near_pairs(np.ascontiguousarray(hashes[:, k]), full, NEAR_BITS) for k in range(3)]  # as is, mirror, centre
    pairs = np.sort(np.concatenate(found), axis=1)
    pairs = np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)
    scores = similarity(thumbs, pairs)
    keep = scores > 0
    return star_groups(pairs[keep], scores[keep])


def near_pairs(queries: np.ndarray, index: np.ndarray, max_bits: int, chunk: int = 4096) -> np.ndarray:
    """(query row, index row) for every pair of 64-bit hashes within max_bits bits, as an M x 2 array, by
    multi-index hashing: BANDS bands of 16 bits, each looked up with up to RADIUS of its bits flipped."""
    assert max_bits < BANDS * (RADIUS + 1), "pigeonhole: within that, some band is within RADIUS bits"
    found = [np.zeros((0, 2), dtype=np.int64)]
    masks = np.arange(2 ** BAND_BITS, dtype=np.int64)
    probes = masks[np.bitwise_count(masks) <= RADIUS]  # every mask of up to RADIUS bits, ascending
    for band in range(BANDS):
        keys = ((index >> np.uint64(band * BAND_BITS)) & np.uint64(0xFFFF)).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        starts = np.searchsorted(keys[order], np.arange(2 ** BAND_BITS + 1))
        qkeys = ((queries >> np.uint64(band * BAND_BITS)) & np.uint64(0xFFFF)).astype(np.int64)
        for lo_q in range(0, len(queries), chunk):  # bounded memory whatever the size
            q_rows = np.arange(lo_q, min(lo_q + chunk, len(queries)))
            probe = (qkeys[q_rows, None] ^ probes[None, :]).ravel()
            lo, counts = starts[probe], starts[probe + 1] - starts[probe]
            q = np.repeat(np.repeat(q_rows, len(probes)), counts)
            offset = np.arange(len(q)) - np.repeat(np.cumsum(counts) - counts, counts)
            cand = order[np.repeat(lo, counts) + offset]
            close = np.bitwise_count(queries[q] ^ index[cand]) <= max_bits
            found.append(np.stack([q[close], cand[close]], axis=1))
    return np.unique(np.concatenate(found), axis=0)


def similarity(thumbs: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Per pair: the best SSIM (`measures`) over the ways one can be a copy of the other (as is, mirrored, either
    one a crop of the other) among those where colours and detail agree too; 0 when none confirms a copy."""
    best = np.zeros(len(pairs))
    for a, b in variants(thumbs, pairs):
        s, diff, detail = measures(a, b)
        ok = (s >= MIN_SSIM) & (diff <= MAX_COLOUR_DIFF) & (detail >= MIN_DETAIL)
        ok[ok] = local_detail(a[ok], b[ok]) >= MIN_LOCAL  # the costlier check, on the few pairs still in
        best = np.maximum(best, np.where(ok, s, 0.0))
    return best


def variants(thumbs: np.ndarray, pairs: np.ndarray):
    a, b = thumbs[pairs[:, 0]], thumbs[pairs[:, 1]]
    yield a, b
    yield a, b[:, :, ::-1]
    yield centre_zoom(a), b
    yield a, centre_zoom(b)


def centre_zoom(thumbs: np.ndarray) -> np.ndarray:
    """The centre CENTRE x CENTRE of N thumbnails (N x S x S x C) enlarged back to S x S, bilinear."""
    side = thumbs.shape[1]
    pos = (np.arange(side) + 0.5) * CENTRE + side * (1 - CENTRE) / 2 - 0.5
    i0 = np.clip(np.floor(pos).astype(int), 0, side - 2)
    w = (pos - i0)[None, :, None, None]
    t = thumbs.astype(np.float32)
    t = t[:, i0] * (1 - w) + t[:, i0 + 1] * w
    t = t[:, :, i0] * (1 - w.transpose(0, 2, 1, 3)) + t[:, :, i0 + 1] * w.transpose(0, 2, 1, 3)
    return np.round(t).astype(np.uint8)


def measures(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair of 32x32 colour thumbnails (N x 32 x 32 x 3 each): the lowest SSIM of the three colour channels;
    the mean absolute difference of their 8x8 block averages (grey levels); and the correlation of their detail
    (grey minus a 9x9 blur: SSIM finds dark, low-contrast surfaces alike, their detail tells them apart; 1 where
    neither has any detail)."""
    if not len(a):
        return np.zeros(0), np.zeros(0), np.zeros(0)
    s = ssim(a.transpose(0, 3, 1, 2), b.transpose(0, 3, 1, 2)).min(axis=1)
    n, side = len(a), a.shape[1]
    blocks = (n, 8, side // 8, 8, side // 8, 3)
    diff = np.abs(a.reshape(blocks).mean(axis=(2, 4)) - b.reshape(blocks).mean(axis=(2, 4))).mean(axis=(1, 2, 3))
    da, db = _detail(a), _detail(b)
    sa, sb = da.std(axis=1), db.std(axis=1)
    corr = (da * db).mean(axis=1) / np.maximum(sa * sb, 1e-9)
    return s, diff, np.where((sa < 1) & (sb < 1), 1.0, corr)


def local_detail(a: np.ndarray, b: np.ndarray, blocks: int = 4, flat: float = 0.5) -> np.ndarray:
    """Per pair of colour thumbnails (N x S x S x 3 each): the median, over blocks x blocks blocks, of the
    correlation of their fine detail (grey, difference of Gaussians of sigma 1 and 2), each block of `b` allowed
    a shift of one pixel (resizing, cropping and re-exposing move detail a little, not more). A copy agrees in
    almost every block; two different surfaces under the same light agree in a few (their shared streaks) and
    not where each has its own marks. Blocks flat (detail below `flat` grey levels) in either image are left
    out; a pair with fewer than `blocks` blocks left gets 1 (nothing to compare: the other signals decide)."""
    if not len(a):
        return np.zeros(0)
    da, db = _dog(a), np.pad(_dog(b), ((0, 0), (1, 1), (1, 1)), mode="edge")
    n, side = da.shape[:2]
    cell = side // blocks

    def cut(d: np.ndarray) -> np.ndarray:  # N x blocks*blocks x cell*cell, each block centred
        d = d.reshape(n, blocks, cell, blocks, cell).transpose(0, 1, 3, 2, 4).reshape(n, blocks * blocks, -1)
        return d - d.mean(axis=2, keepdims=True)

    xa = cut(da)
    na = np.sqrt((xa * xa).sum(axis=2))
    best = np.full(xa.shape[:2], -1.0)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            xb = cut(db[:, dy:dy + side, dx:dx + side])
            nb = np.sqrt((xb * xb).sum(axis=2))
            best = np.maximum(best, (xa * xb).sum(axis=2) / np.maximum(na * nb, 1e-9))
    std_a = na / np.sqrt(cell * cell)
    std_b = np.sqrt((cut(db[:, 1:-1, 1:-1]) ** 2).mean(axis=2))
    best[(std_a < flat) | (std_b < flat)] = np.nan
    enough = (~np.isnan(best)).sum(axis=1) >= blocks
    out = np.ones(n)
    out[enough] = np.nanmedian(best[enough], axis=1)
    return out


def _dog(thumbs: np.ndarray) -> np.ndarray:
    grey = thumbs.astype(np.float64).mean(axis=3)
    return gaussian_filter(grey, (0, 1, 1)) - gaussian_filter(grey, (0, 2, 2))


def _detail(thumbs: np.ndarray) -> np.ndarray:
    grey = thumbs.astype(np.float64).mean(axis=3)
    d = (grey - uniform_filter(grey, (1, 9, 9))).reshape(len(grey), -1)
    return d - d.mean(axis=1, keepdims=True)


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> np.ndarray:
    """Mean structural similarity (Wang et al. 2004; uniform window, as scikit-image's default) of pairs of grey
    images (... x H x W, uint8) -> one value per pair (the leading dimensions), in [-1, 1]."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    size = (1,) * (a.ndim - 2) + (window, window)
    mu_a, mu_b = uniform_filter(a, size), uniform_filter(b, size)
    n = window * window
    var_a = (uniform_filter(a * a, size) - mu_a * mu_a) * n / (n - 1)
    var_b = (uniform_filter(b * b, size) - mu_b * mu_b) * n / (n - 1)
    cov = (uniform_filter(a * b, size) - mu_a * mu_b) * n / (n - 1)
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    pad = window // 2
    return s[..., pad:-pad, pad:-pad].mean(axis=(-2, -1))


def star_groups(edges: np.ndarray, scores: np.ndarray) -> list[list[int]]:
    """Groups around representatives: the image with the most confirmed near-duplicates (then the highest total
    SSIM) takes every one of them not yet in a group, and so on. Each member is a confirmed copy of its group's
    representative, so a chain of look-alikes (a~b, b~c, ...) never pulls far-apart images into one group."""
    links: dict[int, dict[int, float]] = {}
    for (a, b), s in zip(edges.tolist(), scores.tolist(), strict=True):
        links.setdefault(a, {})[b] = s
        links.setdefault(b, {})[a] = s
    taken: set[int] = set()
    groups = []
    for rep in sorted(links, key=lambda v: (-len(links[v]), -sum(links[v].values()), v)):
        if rep in taken:
            continue
        members = [rep] + [v for v in links[rep] if v not in taken]
        if len(members) > 1:
            groups.append(sorted(members))
            taken.update(members)
    return groups


def leakage_summary(ds: Dataset, gathered: Gathered | None = None) -> dict:
    """RunSummary.leakage: duplicate counts at the end of a run, from the fingerprints its decoding gathered
    (`gathered`) or the machine cache (the Data page, an earlier run); other files are read here."""
    report = find_duplicates(ds, gathered=gathered)
    return {**report.summary(), "leaked_val_paths": report.leaked("val")[:50]}
