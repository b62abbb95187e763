"""Device and precision choices, in one place: the training loop only sees a device, an autocast context and
whether it needs a gradient scaler."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def pick_device(name: str = "auto") -> torch.device:
    """CPU, or this process's GPU with its index: `cuda:LOCAL_RANK` (torchrun's LOCAL_RANK, 0 in one process), so
    that whatever is placed, wrapped or all-reduced lands on the rank's own GPU and `device.index` is never None."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is visible; use device 'auto' or 'cpu'.")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """The autocast dtype for this device and setting, or None for plain fp32.

    CPU: always fp32 (bf16 training measured slower on these CPUs). CUDA: `auto` takes bf16 where the GPU has it,
    else fp16; `bf16` / `fp16` force one; `off` is fp32."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def needs_grad_scaler(device: torch.device, amp: str = "auto") -> bool:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none. Whatever chose fp16
    (`fp16`, or `auto` on a GPU without bf16) gets a scaler."""
    return amp_dtype(device, amp) == torch.float16


def grad_scaler(device: torch.device, amp: str = "auto") -> torch.amp.GradScaler:
    """The gradient scaler for a training on this device and setting: enabled exactly when it trains in fp16."""
    return torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, amp))


def backward_step(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor) -> None:
    """One optimizer step on `loss` through the scaler (a plain step when the scaler is disabled): every training
    loop steps this way, so none can train fp16 without loss scaling."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


def autocast(device: torch.device, amp: str = "auto") -> contextlib.AbstractContextManager:
    dtype = amp_dtype(device, amp)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


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


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA out-of-memory, which a smaller batch can avoid (torch raises OutOfMemoryError, a RuntimeError)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError)


def free_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def halving_on_oom(run: Callable[[int], T], size: int, on_halve: Callable[[int], None] = lambda n: None) -> T:
    """run(size); on CUDA out-of-memory, run(size // 2) and so on down to 1 (then the error goes up). on_halve(new
    size) is told each time, to say so."""
    while True:
        try:
            return run(size)
        except Exception as exc:
            if not is_out_of_memory(exc) or size <= 1:
                raise
            free_cached_memory()
            size //= 2
            on_halve(size)
