"""Pure compute references for the benchmarks: how fast this machine runs the backbone on random tensors of the
shapes a run uses (forward only, and forward+backward+AdamW), the floor a training's time is compared with."""

from __future__ import annotations

import tempfile
import time
import warnings

import numpy as np
import torch
from torch import nn


def forward_reference(n_images: int, seconds: float = 2.0) -> dict:
    """Fastest forward pass over n images: ONNX Runtime and torch eager (channels_last) at several batches."""
    import onnxruntime as ort

    from core.config import TrainConfig
    from core.models.backbones import FeatureExtractor, create_model
    model = FeatureExtractor(create_model(TrainConfig(), 2)).eval().to(memory_format=torch.channels_last)
    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/m.onnx"
        with warnings.catch_warnings():  # the legacy exporter, as in core.models.features
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), path, input_names=["x"],
                              dynamic_axes={"x": {0: "b"}}, dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        for bs in (1, 4, 8, 16):
            x = np.random.randn(bs, 3, 224, 224).astype(np.float32)
            best[f"onnxruntime bs{bs}"] = _rate(lambda x=x: sess.run(None, {"x": x}), bs, seconds)
        # what the engine does on CPU: one single-threaded session per core, each on its own share of the images
        n = torch.get_num_threads()
        opts.intra_op_num_threads = 1
        sessions = [ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]) for _ in range(n)]
        for bs in (4, 16):
            x = np.random.randn(bs, 3, 224, 224).astype(np.float32)
            best[f"onnxruntime {n} sessions x 1 thread bs{bs}"] = _parallel_rate(
                [lambda x=x, s=s: s.run(None, {"x": x}) for s in sessions], bs, seconds)
    with torch.inference_mode():
        for fmt in (torch.channels_last, torch.contiguous_format):
            model = model.to(memory_format=fmt)
            for bs in (4, 16):
                x = torch.randn(bs, 3, 224, 224).contiguous(memory_format=fmt)
                best[f"torch {str(fmt).split('.')[-1]} bs{bs}"] = _rate(lambda x=x, m=model: m(x), bs, seconds)
    name = max(best, key=best.get)
    eager = max((k for k in best if k.startswith("torch")), key=best.get)
    return {"best": name, "img_s": best[name], "seconds": n_images / best[name], "all": best,
            "eager_best": eager, "eager_seconds": n_images / best[eager]}


def train_step_reference(n_train: int, n_val: int, batch: int, seconds: float = 6.0) -> dict:
    """forward+backward+AdamW for n_train images at `batch`, plus forward-only for n_val: one ideal epoch."""
    from core.config import TrainConfig
    from core.models.backbones import create_model
    model = create_model(TrainConfig(), 2).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))

    def step():
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.train()
    train_rate = _rate(step, batch, seconds)
    model.eval()
    xv = torch.randn(16, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        eval_rate = _rate(lambda: model(xv), 16, seconds / 3)
    return {"train_img_s": train_rate, "eval_img_s": eval_rate,
            "epoch_s": n_train / train_rate + n_val / eval_rate}


def _parallel_rate(fns: list, batch: int, seconds: float) -> float:
    """Images/s of len(fns) threads each calling its fn for `seconds` (ONNX Runtime releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(len(fns)) as pool:
        return sum(pool.map(lambda fn: _rate(fn, batch, seconds), fns))


def _rate(fn, batch: int, seconds: float) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += batch
    return n / (time.perf_counter() - t0)
