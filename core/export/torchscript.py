"""TorchScript export of a bundle: for C++ (libtorch), mobile and servers that run PyTorch without our code.

The traced module is the classifier with its calibration temperature and softmax (the same contract as the ONNX
file: timm-transformed float32 NCHW in, probabilities out); class names and preprocessing ride along as extra
files (`torch.jit.load(path, _extra_files={"label_names.json": ""})`). torch marks tracing as deprecated in
favour of torch.export, but TorchScript is what libtorch and PyTorch Mobile load today.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.export.onnx import Probabilities, export_metadata


def export_torchscript(model: nn.Module, classes: list[str], data_cfg: dict, temperature: float, dest: Path) -> Path:
    """Trace and save; `dest` appears only when complete."""
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    wrapped = Probabilities(model, temperature).eval()
    example = torch.zeros(1, *data_cfg["input_size"])
    extra = {f"{k}.json" if k in ("label_names", "preprocessing") else f"{k}.txt": v
             for k, v in export_metadata(classes, data_cfg, temperature).items()}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the deprecation notice, and tracer notes on TF "same" padding
        traced = torch.jit.trace(wrapped, example, check_trace=False)
        traced = torch.jit.freeze(traced)
        torch.jit.save(traced, str(tmp), _extra_files=extra)
    tmp.replace(dest)
    return dest


class TorchScriptRunner:
    """A saved TorchScript export: float32 NCHW batch in, probabilities out."""

    def __init__(self, path: Path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.module = torch.jit.load(str(path), map_location="cpu").eval()

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
