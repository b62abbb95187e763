"""Frozen-backbone features, computed once per image and view, and cached on disk for later runs.

Used by the `probe` freeze mode: the backbone never changes, so each image goes through it once and the head
trains on the pooled features. On CPU the forward pass runs in ONNX Runtime (measured 2.9x faster than torch
eager here); on CUDA in torch with autocast. The cache is keyed by backbone + weights + preprocessing (one
file) and, inside it, by each image's content hash, view index and decode path (exact or fast, see
core/data/images.py), so changed datasets reuse what they can.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import queue
import threading
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.config import TrainConfig
from core.data.augment import Preprocessor
from core.data.dataset import Sample, Skipped
from core.data.images import decode_or_skip, geometry, one_torch_thread, strict_truncation
from core.device import autocast, free_cached_memory, is_out_of_memory, pick_device
from core.files.atomic import atomic_write_bytes
from core.files.cache import FeatureCache, cache_root
from core.files.digest import bytes_digest, file_digest
from core.models.backbones import FeatureExtractor
from core.models.init_from import read_source

ORT_BATCH = 16  # ONNX Runtime batches of 4 and 16 measure within noise on the 2-core machines (bench)
MAX_SESSIONS = 8  # CPU: one single-threaded ONNX Runtime session per worker, up to this many
CHUNK = 32  # images a worker reads, decodes (and on CPU runs through the backbone) at a time
PREFETCH = 8  # chunks in flight (bounds memory: 8 x 32 x 150 KB crops at 224 px)


def feature_cache(key: str) -> FeatureCache:
    return FeatureCache(cache_root() / "features" / f"{key}.npz")


def onnx_dir() -> Path:
    return cache_root() / "onnx"


def pretrained_features(cfg: TrainConfig, samples: list[Sample], exact: bool = True, views: int = 1,
                        progress: Callable[[int, int], None] | None = None,
                        should_stop: Callable[[], bool] = lambda: False,
                        ) -> tuple[list[np.ndarray | None], list[Skipped]]:
    """Pooled features of cfg's pretrained backbone (weights and image size as in cfg, no head) for any images,
    views x D each (None where an image failed to decode), from the shared cache where present. This is what a
    probe trains on, and what ranking backbones and out-of-sample analyses (mislabel ranking) need: features
    that never saw the labels."""
    from core.models.backbones import create_model, data_config
    model = create_model(cfg, 1).eval()
    data_cfg = data_config(model, cfg.img_size)
    device = pick_device(cfg.device)
    key = model_key(cfg.backbone, cfg.weights, weights_digest(cfg), data_cfg)
    backbone = Backbone(model.to(device), data_cfg, device, onnx_dir(), key, cfg.amp)
    return extract_features(samples, [views] * len(samples), [exact] * len(samples), backbone,
                            geometry(data_cfg), feature_cache(key), progress, should_stop)


def weights_digest(cfg: TrainConfig) -> str:
    """What identifies cfg's pretrained weights in cache keys: for a run started from another run, the content
    hash of that run's weights (never the ImageNet weights' key: its features differ)."""
    if cfg.init_from:
        return "init-from-" + read_source(cfg.init_from, weights=False).digest
    if cfg.weights == "bundled":
        from core.models.backbones import bundled_weights_path
        return bundled_weights_path(cfg.backbone).name
    if cfg.weights == "random":
        return f"random-seed{cfg.seed}"
    if cfg.weights == "hub":
        return "hub"
    return file_digest(Path(cfg.weights))


class Backbone:
    """The frozen feature extractor on uint8 NHWC centre crops: ONNX Runtime on CPU, torch on CUDA.

    On CPU there is one single-threaded ONNX Runtime session per worker thread, and each worker decodes a
    chunk and then runs it through its own session (see extract_features): measured faster than one session
    using every core taking turns with decoding, because a multi-threaded session's threads wait for each other
    at every layer, and overlapping it with decoding made them wait longer. The ONNX graph takes the uint8
    crops and normalises them itself, so no float copy is made in Python. `start()` exports the ONNX model
    (cached on disk) and opens the sessions in a background thread while the first images decode.
    """

    def __init__(self, model: nn.Module, data_cfg: dict, device: torch.device, onnx_dir: Path, key: str,
                 amp: str = "auto", workers: int | None = None):
        self.extractor = FeatureExtractor(model).eval()
        self.device, self.amp = device, amp
        self.uses_ort = device.type == "cpu"
        self.workers = max(1, workers or torch.get_num_threads())
        self.pre = Preprocessor(data_cfg, device)
        self.onnx_path = onnx_dir / f"{key}-u8.onnx"  # -u8: takes uint8 NHWC (older caches took floats)
        self.size = int(data_cfg["input_size"][-1])
        self._sessions: Future | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self.uses_ort and self._sessions is None:
                starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx-session")
                self._sessions = starter.submit(self._open_sessions)
                starter.shutdown(wait=False)

    def ready(self) -> bool:
        return not self.uses_ort or (self._sessions is not None and self._sessions.done())

    def _open_sessions(self) -> queue.SimpleQueue:
        import onnxruntime as ort
        if not self.onnx_path.exists():
            buf = io.BytesIO()
            x = torch.zeros(1, self.size, self.size, 3, dtype=torch.uint8)
            with warnings.catch_warnings():  # legacy TorchScript exporter: deprecated, but measured 0.75 s here
                warnings.simplefilter("ignore")
                # eval(): the exporter restores the module's mode afterwards, and train mode would reach s.model
                torch.onnx.export(_FromUint8(self.extractor, self.pre).eval(), (x,), buf, input_names=["x"],
                                  output_names=["features"], dynamic_axes={"x": {0: "b"}, "features": {0: "b"}},
                                  dynamo=False)
            atomic_write_bytes(self.onnx_path, buf.getvalue())
        n = min(self.workers, MAX_SESSIONS)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = max(1, self.workers // n)
        opts.inter_op_num_threads = 1
        sessions: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(n):
            sessions.put(ort.InferenceSession(str(self.onnx_path), opts, providers=["CPUExecutionProvider"]))
        return sessions

    @torch.inference_mode()
    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """N x size x size x 3 uint8 centre crops -> N x D float32 pooled features. Thread-safe."""
        if self.uses_ort:
            self.start()
            sessions = self._sessions.result()  # re-raises an export error here, in the caller's thread
            session = sessions.get()  # as many sessions as workers: this never waits for long
            try:
                return np.concatenate([session.run(None, {"x": crops[i:i + ORT_BATCH]})[0]
                                       for i in range(0, len(crops), ORT_BATCH)])
            finally:
                sessions.put(session)
        return self._torch_features(crops)

    def _torch_features(self, crops: np.ndarray) -> np.ndarray:
        """The GPU path; on CUDA out-of-memory the batch is split in halves (down to one image) and each half
        retried, so a large backbone or image size still gets its features."""
        try:
            with autocast(self.device, self.amp):
                return self.extractor(self.pre.to_float(torch.from_numpy(crops))).float().cpu().numpy()
        except Exception as exc:
            if not is_out_of_memory(exc) or len(crops) <= 1:
                raise
            free_cached_memory()
            half = len(crops) // 2
            return np.concatenate([self._torch_features(crops[:half]), self._torch_features(crops[half:])])


class _FromUint8(nn.Module):
    """uint8 NHWC in, features out: Preprocessor.to_float's arithmetic inside the exported graph."""

    def __init__(self, extractor: nn.Module, pre: Preprocessor):
        super().__init__()
        self.extractor = extractor
        self.register_buffer("scale", pre.scale.cpu())
        self.register_buffer("shift", pre.shift.cpu())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x.permute(0, 3, 1, 2).float().mul(self.scale).sub(self.shift))


def model_key(cfg_backbone: str, weights: str, weights_digest: str, data_cfg: dict) -> str:
    desc = json.dumps([cfg_backbone, weights, weights_digest, data_cfg], sort_keys=True, default=str)
    return hashlib.blake2b(desc.encode(), digest_size=10).hexdigest()


@dataclass
class _Chunk:
    size: int  # samples in the chunk
    idx: list[int] = field(default_factory=list)  # decoded, features not computed yet
    crops: list[np.ndarray] = field(default_factory=list)
    failed: list[Skipped] = field(default_factory=list)


def extract_features(samples: list[Sample], views: list[int], exact: list[bool], backbone: Backbone,
                     geometry: tuple[int, int, str], cache: FeatureCache,
                     progress: Callable[[int, int], None] | None = None,
                     should_stop: Callable[[], bool] = lambda: False,
                     on_read: Callable[[str, bytes, str], None] | None = None,
                     ) -> tuple[list[np.ndarray | None], list[Skipped]]:
    """Features of each sample, views[i] x D (view 1 is the mirror image), or None where it failed to decode.

    exact[i] asks for the exact (export-parity) decode: validation images. Training images take the fast
    decode, or reuse exact features already cached. Worker threads take chunks of CHUNK samples: each file is
    read once, hashed (the cache key), and decoded only when its features are not cached; on CPU the same
    worker then runs the chunk through its own ONNX Runtime session, on a GPU the calling thread does while
    the workers decode the next chunks. `on_read(path, bytes, content hash)` is called in the worker for every file
    read (a run gathers the fingerprints of its duplicate search there: core/data/fingerprints.Gathered).
    """
    n, crop = len(samples), geometry[1]
    found: list[np.ndarray | None] = [None] * n
    hashes = [""] * n

    def load(idx: list[int]) -> _Chunk:  # worker thread
        chunk = _Chunk(len(idx))
        for i in idx:
            try:
                data = Path(samples[i].path).read_bytes()
            except OSError as exc:
                chunk.failed.append(Skipped(samples[i].path, f"could not be read ({exc.strerror or exc})"))
                continue
            hashes[i] = bytes_digest(data)
            if on_read is not None:
                on_read(samples[i].path, data, hashes[i])
            if (cached := _cached(cache, hashes[i], views[i], exact[i])) is not None:
                found[i] = cached
                continue
            got = decode_or_skip(samples[i], *geometry, exact=exact[i], data=data)
            if isinstance(got, Skipped):
                chunk.failed.append(got)
            else:
                o = (got.shape[0] - crop) // 2
                chunk.idx.append(i)
                chunk.crops.append(got[o:o + crop, o:o + crop])
        if chunk.idx:
            backbone.start()
            if backbone.uses_ort and backbone.ready():  # before the session is ready: decode on, compute later
                compute(chunk)
        return chunk

    def compute(chunk: _Chunk) -> _Chunk:
        batch = np.stack(chunk.crops)
        for v in range(max(views[i] for i in chunk.idx)):
            rows = [k for k, i in enumerate(chunk.idx) if views[i] > v]
            part = batch[rows] if len(rows) < len(chunk.idx) else batch
            feats = backbone(np.ascontiguousarray(part if v == 0 else part[:, :, ::-1]))  # view 1: mirrored
            for k, f in zip(rows, feats, strict=True):
                i = chunk.idx[k]
                cache.put(_key(hashes[i], v, exact[i]), f.astype(np.float32))
        for i in chunk.idx:
            found[i] = _cached(cache, hashes[i], views[i], exact[i])
        chunk.idx, chunk.crops = [], []
        return chunk

    chunks = (list(range(i, min(i + CHUNK, n))) for i in range(0, n, CHUNK))
    failed: list[Skipped] = []
    done = 0
    with strict_truncation(), one_torch_thread(), ThreadPoolExecutor(max_workers=backbone.workers) as pool:
        ahead = deque(pool.submit(load, idx) for idx in itertools.islice(chunks, PREFETCH))
        while ahead and not should_stop():
            chunk = ahead.popleft().result()
            if chunk.idx and backbone.uses_ort:  # decoded while the session was being built: compute it now
                ahead.append(pool.submit(compute, chunk))
                continue
            if chunk.idx:  # GPU: computed here while the workers decode the chunks ahead
                compute(chunk)
            failed += chunk.failed
            done += chunk.size
            if progress:
                progress(done, n)
            if (nxt := next(chunks, None)) is not None:
                ahead.append(pool.submit(load, nxt))
        pool.shutdown(cancel_futures=True)  # stopped: drop the chunks ahead
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
