"""Device and precision choices, in one place: the training loop only sees a device and an autocast context."""

from __future__ import annotations

import contextlib
import os

import torch


def pick_device(name: str = "auto") -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is visible; use device 'auto' or 'cpu'.")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def autocast(device: torch.device, amp: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 (or fp16) autocast on CUDA; plain fp32 on CPU, where bf16 training measured slower here."""
    if device.type != "cuda" or amp == "off":
        return contextlib.nullcontext()
    dtype = torch.float16 if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()) \
        else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)


def set_threads(threads: int = 0) -> int:
    n = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def describe_device(device: torch.device | None = None) -> str:
    device = device or pick_device()
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"GPU: {p.name} ({p.total_memory / 1024**3:.0f} GiB)"
    return f"CPU: {len(os.sched_getaffinity(0))} cores"
