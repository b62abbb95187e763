"""Frozen-backbone features, computed once per image and view, and cached on disk for later runs.

Used by the `probe` freeze mode: the backbone never changes, so each image goes through it once and the head
trains on the pooled features. On CPU the forward pass runs in ONNX Runtime (measured 2.9x faster than torch
eager here); on CUDA in torch with autocast. The cache is keyed by backbone + weights + preprocessing (one
file) and, inside it, by each image's content hash, view index and decode path (exact or fast, see
core/images.py), so changed datasets reuse what they can.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.augment import Preprocessor
from core.backbones import FeatureExtractor
from core.data import Sample, Skipped, file_digest
from core.device import autocast
from core.images import decode_or_skip, strict_truncation
from core.runs import atomic_write_bytes

ORT_BATCH = 16  # ONNX Runtime batches of 4 and 16 measure within noise on the 2-core machines (bench)
CHUNK = 32  # images decoded and pushed through the backbone at a time
PREFETCH = 8  # chunks decoded ahead of the backbone (bounds memory: 8 x 32 x 192 KB at 224 px)


def content_hashes(samples: list[Sample], workers: int = 2) -> list[str]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda s: file_digest(Path(s.path)), samples))


class FeatureCache:
    """content-hash/view -> feature vector, persisted as one .npz per (model, preprocessing) key."""

    def __init__(self, path: Path):
        self.path = path
        self.table: dict[str, np.ndarray] = {}
        if path.exists():
            try:
                with np.load(path) as z:
                    self.table = dict(zip(z["keys"].tolist(), z["feats"], strict=True))
            except (OSError, ValueError, KeyError):  # a damaged cache is rebuilt, never trusted
                self.table = {}
        self.dirty = False

    def get(self, key: str) -> np.ndarray | None:
        return self.table.get(key)

    def put(self, key: str, value: np.ndarray) -> None:
        self.table[key] = value
        self.dirty = True

    def save(self) -> None:
        if not self.dirty or not self.table:
            return
        buf = io.BytesIO()
        keys = list(self.table)
        np.savez(buf, keys=np.array(keys), feats=np.stack([self.table[k] for k in keys]))
        atomic_write_bytes(self.path, buf.getvalue())
        self.dirty = False


class Backbone:
    """Runs the frozen feature extractor on normalised batches: ONNX Runtime on CPU, torch on CUDA.

    On CPU, `start()` exports the ONNX model (cached on disk) and opens the session in a background thread, so
    images decode meanwhile: the export is mostly Python on one core, and decoding releases the GIL.
    """

    def __init__(self, model: nn.Module, data_cfg: dict, device: torch.device, onnx_path: Path,
                 amp: str = "auto"):
        self.extractor = FeatureExtractor(model).eval()
        self.device, self.amp = device, amp
        self.uses_ort = device.type == "cpu"
        self.onnx_path, self.size = onnx_path, int(data_cfg["input_size"][-1])
        self._session: Future | None = None

    def start(self) -> None:
        if self.uses_ort and self._session is None:
            starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx-session")
            self._session = starter.submit(self._ort_session)
            starter.shutdown(wait=False)

    def wait_ready(self) -> None:
        self.start()
        if self._session is not None:
            self._session.result()  # re-raises an export error here, in the caller's thread

    def _ort_session(self):
        import onnxruntime as ort
        if not self.onnx_path.exists():
            buf = io.BytesIO()
            x = torch.zeros(1, 3, self.size, self.size)
            with warnings.catch_warnings():  # legacy TorchScript exporter: deprecated, but measured 0.75 s here
                warnings.simplefilter("ignore")
                torch.onnx.export(self.extractor, (x,), buf, input_names=["x"], output_names=["features"],
                                  dynamic_axes={"x": {0: "b"}, "features": {0: "b"}}, dynamo=False)
            atomic_write_bytes(self.onnx_path, buf.getvalue())
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = torch.get_num_threads()
        return ort.InferenceSession(str(self.onnx_path), opts, providers=["CPUExecutionProvider"])

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> np.ndarray:
        if self.uses_ort:
            self.wait_ready()
            session = self._session.result()
            x = x.contiguous().numpy()
            return np.concatenate([session.run(None, {"x": x[i:i + ORT_BATCH]})[0]
                                   for i in range(0, len(x), ORT_BATCH)])
        with autocast(self.device, self.amp):
            return self.extractor(x).float().cpu().numpy()


def model_key(cfg_backbone: str, weights: str, weights_digest: str, data_cfg: dict) -> str:
    desc = json.dumps([cfg_backbone, weights, weights_digest, data_cfg], sort_keys=True, default=str)
    return hashlib.blake2b(desc.encode(), digest_size=10).hexdigest()


def extract_features(samples: list[Sample], views: list[int], exact: list[bool], backbone: Backbone,
                     pre: Preprocessor, geometry: tuple[int, int, str], cache: FeatureCache,
                     progress: Callable[[int, int], None] | None = None,
                     should_stop: Callable[[], bool] = lambda: False,
                     ) -> tuple[list[np.ndarray | None], list[Skipped]]:
    """Features of each sample, views[i] x D (view 1 is the mirror image), or None where it failed to decode.

    exact[i] asks for the exact (export-parity) decode: validation images. Training images take the fast
    decode, or reuse exact features already cached. Up to PREFETCH chunks decode ahead of the backbone: on a
    GPU all along, on CPU only while the ONNX session is being built (see the loop).
    """
    hashes = content_hashes(samples)
    found = [_cached(cache, h, v, x) for h, v, x in zip(hashes, views, exact, strict=True)]
    todo = [i for i, f in enumerate(found) if f is None]
    failed: list[Skipped] = []
    chunks = iter([todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)])
    done = 0
    if todo:
        backbone.start()
    with strict_truncation(), ThreadPoolExecutor(max_workers=2) as pool:
        def submit(idx: list[int]) -> tuple[list[int], list[Future]]:
            return idx, [pool.submit(decode_or_skip, samples[i], *geometry, exact=exact[i]) for i in idx]
        ahead = deque(submit(idx) for idx in itertools.islice(chunks, PREFETCH))

        def refill() -> None:
            if (nxt := next(chunks, None)) is not None:
                ahead.append(submit(nxt))
        while ahead and not should_stop():
            idx, futures = ahead.popleft()
            decoded = [f.result() for f in futures]
            if backbone.uses_ort:
                # On CPU, decoding and the backbone share the same cores, and ORT's threads wait for the
                # slowest: overlapping them measured slower than taking turns. So the read-ahead only runs
                # while the session is being built, and then each chunk decodes, then computes.
                backbone.wait_ready()
                wait([f for _, fs in ahead for f in fs])
            else:
                refill()  # on a GPU the next chunk decodes while the GPU computes
            failed += [a for a in decoded if isinstance(a, Skipped)]
            ok = [(i, a) for i, a in zip(idx, decoded, strict=True) if not isinstance(a, Skipped)]
            if ok:
                batch = pre.eval_view(torch.from_numpy(np.stack([a for _, a in ok])))
                for v in range(max(views[i] for i, _ in ok)):
                    rows = [n for n, (i, _) in enumerate(ok) if views[i] > v]
                    part = batch[rows] if len(rows) < len(ok) else batch
                    feats = backbone(part if v == 0 else part.flip(-1))
                    for n, f in zip(rows, feats, strict=True):
                        i = ok[n][0]
                        cache.put(_key(hashes[i], v, exact[i]), f.astype(np.float32))
                for i, _ in ok:
                    found[i] = _cached(cache, hashes[i], views[i], exact[i])
            if backbone.uses_ort:
                refill()
            done += len(idx)
            if progress:
                progress(done, len(todo))
        pool.shutdown(cancel_futures=True)  # stopped: drop the read-ahead
    cache.save()
    return found, failed


def _key(content_hash: str, view: int, exact: bool) -> str:
    return f"{content_hash}/{view}" if exact else f"{content_hash}/{view}/fast"


def _cached(cache: FeatureCache, content_hash: str, views: int, exact: bool) -> np.ndarray | None:
    """Cached features of all views, or None. Exact features also serve training images; fast ones don't
    serve validation images (their accuracy must match the exported model's)."""
    for ex in (True,) if exact else (True, False):
        rows = [cache.get(_key(content_hash, v, ex)) for v in range(views)]
        if all(r is not None for r in rows):
            return np.stack(rows)
    return None
