"""The CUDA paths in one command, through the engine's own functions, with a pass/fail table:

    python -m bench.gpu_check            # meant for under 5 minutes on a CUDA machine (not yet run on one)

bf16 and fp16 training steps (fp16 through the gradient scaler), channels_last, a forced out-of-memory and the
engine's halving retry, DistributedDataParallel with 2 processes (nccl when 2 GPUs exist, else gloo on the CPU)
through core/engine/distributed.py, and ONNX Runtime's CUDA provider when it is installed. On a machine without a
GPU it runs what it can (fp32 steps, channels_last, the retry on a simulated out-of-memory, DDP on gloo) and names
what it skipped and why. Exit code 1 when a check fails, else 0 (skips are not failures).
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from core.config import TrainConfig
from core.device import autocast, backward_step, describe_device, grad_scaler, halving_on_oom, pick_device
from core.models.backbones import create_model

PASS, FAIL, SKIP = "pass", "FAIL", "skipped"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    seconds: float = 0.0


class Skip(Exception):
    """A check that cannot run here; the message says why."""


def _model(device: torch.device) -> tuple[torch.nn.Module, int]:
    """A real-size backbone on a GPU (Lite0 at 224 px, random weights: nothing downloaded), the tiny test one on CPU."""
    name, size = ("tf_efficientnet_lite0", 224) if device.type == "cuda" else ("test_efficientnet", 64)
    return create_model(TrainConfig(backbone=name, weights="random", img_size=size), 10).to(device), size


def _train_steps(device: torch.device, amp: str, channels_last: bool = False, steps: int = 3) -> str:
    """A few optimizer steps as the engine takes them (autocast, the scaler, backward_step); the losses, finite."""
    torch.manual_seed(0)
    model, size = _model(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt, scaler = torch.optim.AdamW(model.parameters(), 1e-3), grad_scaler(device, amp)
    x = torch.randn(16, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (16,), device=device)
    losses = []
    for _ in range(steps):
        with autocast(device, amp):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        backward_step(opt, scaler, loss)
        losses.append(loss.item())
    if not all(map(torch.isfinite, map(torch.tensor, losses))):
        raise AssertionError(f"non-finite loss: {losses}")
    scaled = f", gradient scaler on (scale {scaler.get_scale():g})" if scaler.is_enabled() else ""
    return f"{amp if amp != 'off' else 'fp32'} losses {', '.join(f'{v:.3f}' for v in losses)}{scaled}"


def check_precision(device: torch.device, amp: str) -> str:
    if device.type != "cuda":
        raise Skip("no CUDA GPU: the CPU trains in fp32")
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise Skip("this GPU has no bf16 (auto trains it in fp16 with the scaler)")
    return _train_steps(device, amp)


def check_channels_last(device: torch.device) -> str:
    """Same outputs in channels_last as in the default layout, and training steps in it."""
    torch.manual_seed(0)
    model, size = _model(device)
    model.eval()
    x = torch.randn(4, 3, size, size, device=device)
    with torch.inference_mode():
        plain = model(x)
        model = model.to(memory_format=torch.channels_last)
        last = model(x.contiguous(memory_format=torch.channels_last))
    diff = (plain - last).abs().max().item()
    if diff > 1e-3:
        raise AssertionError(f"channels_last changes the outputs by {diff:.2e}")
    return f"outputs agree to {diff:.1e}; {_train_steps(device, 'off', channels_last=True)}"


def check_oom_retry(device: torch.device) -> str:
    """A batch that cannot fit: the engine's retry (core/device.halving_on_oom) halves it until it does."""
    halvings: list[int] = []
    if device.type == "cuda":
        gib = 1024 ** 3
        start = 2 * torch.cuda.get_device_properties(device).total_memory // gib + 2  # GiB: twice the card

        def allocate(n: int) -> int:
            block = torch.empty(n * gib, dtype=torch.uint8, device=device)
            del block
            return n
        got = halving_on_oom(allocate, start, halvings.append)
        torch.cuda.empty_cache()
        if not halvings:
            raise AssertionError(f"{start} GiB did not run out of memory")
        return f"{start} GiB: real CUDA OOM, retried at {', '.join(map(str, halvings))} GiB, ran at {got}"

    def fits_four(n: int) -> int:
        if n > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return n
    got = halving_on_oom(fits_four, 32, halvings.append)
    if got != 4 or halvings != [16, 8, 4]:
        raise AssertionError(f"retried at {halvings}, ran at {got}")
    return f"simulated (no GPU to fill): batch 32 halved to {', '.join(map(str, halvings))}, ran at {got}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, use_cuda: bool, out: str) -> None:
    """One rank: the engine's setup, wrap, a DDP step on this rank's own data, the collectives; writes what it saw."""
    from core.engine import distributed
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    d = distributed.setup(pick_device("cuda" if use_cuda else "cpu"))
    try:
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 2).to(d.device)
        net, opt = d.wrap(model), torch.optim.SGD(model.parameters(), 0.1)
        torch.manual_seed(1 + rank)  # each rank its own batch: DDP averages the gradients
        x, y = torch.randn(4, 8, device=d.device), torch.randint(0, 2, (4,), device=d.device)
        backward_step(opt, grad_scaler(d.device, "off"), torch.nn.functional.cross_entropy(net(x), y))
        weights = torch.cat([p.detach().flatten() for p in model.parameters()]).double()
        fingerprint = (weights * torch.arange(1, len(weights) + 1, device=d.device)).sum()
        (ranks,), (total,) = d.sum(rank), d.sum(fingerprint)
        spread = (total / world - fingerprint).abs()  # 0 when every rank has the same weights
        stopped = d.any(rank == world - 1)
        d.sync_from_main(model)
        Path(out, f"rank{rank}").write_text(f"{d.device} {int(ranks.item())} {spread.item():.3g} {stopped}")
    finally:
        distributed.teardown(d)


def check_ddp(device: torch.device) -> str:
    import torch.multiprocessing as mp
    use_cuda = device.type == "cuda" and torch.cuda.device_count() >= 2
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_ddp_worker, args=(2, _free_port(), use_cuda, out), nprocs=2, join=True)
        seen = [Path(out, f"rank{r}").read_text().split() for r in range(2)]
    devices = [s[0] for s in seen]
    if any(s[1] != "1" or s[3] != "True" for s in seen) or float(seen[0][2]) > 1e-6:
        raise AssertionError(f"collectives disagree: {seen}")
    where = "nccl on " + " and ".join(devices) if use_cuda else "gloo on the CPU" + (
        " (nccl needs 2 GPUs; this machine has " + str(torch.cuda.device_count()) + ")" if device.type == "cuda" else
        " (no GPU: nccl not tried)")
    return f"{where}: same weights after a step, sum and any agreed"


def check_onnx_cuda(device: torch.device) -> str:
    try:
        import onnxruntime as ort
    except ImportError:
        raise Skip("onnxruntime is not installed") from None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise Skip(f"onnxruntime {ort.__version__} has no CUDA provider (onnxruntime-gpu is not installed)")
    if device.type != "cuda":
        raise Skip("no CUDA GPU")
    import numpy as np

    from core.export.onnx import INPUT, OUTPUT, export_onnx
    model, size = _model(torch.device("cpu"))
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, [str(i) for i in range(10)], {"input_size": (3, size, size)}, 1.0,
                           Path(tmp) / "m.onnx")
        session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
        if session.get_providers()[0] != "CUDAExecutionProvider":
            raise AssertionError(f"the session fell back to {session.get_providers()}")
        x = np.random.default_rng(0).standard_normal((4, 3, size, size)).astype(np.float32)
        got = session.run([OUTPUT], {INPUT: x})[0]
    with torch.inference_mode():
        want = model(torch.from_numpy(x)).softmax(-1).numpy()
    diff = float(np.abs(got - want).max())
    if diff > 1e-3:
        raise AssertionError(f"CUDA provider's probabilities differ from torch's by {diff:.2e}")
    return f"onnxruntime {ort.__version__} on CUDAExecutionProvider: probabilities agree to {diff:.1e}"


def run_checks(device: torch.device) -> list[Check]:
    checks: list[tuple[str, Callable[[], str]]] = [
        ("fp32 training steps", lambda: _train_steps(device, "off")),
        ("bf16 training steps", lambda: check_precision(device, "bf16")),
        ("fp16 training steps + scaler", lambda: check_precision(device, "fp16")),
        ("channels_last", lambda: check_channels_last(device)),
        ("out-of-memory retry", lambda: check_oom_retry(device)),
        ("DDP, 2 processes", lambda: check_ddp(device)),
        ("ONNX Runtime CUDA provider", lambda: check_onnx_cuda(device)),
    ]
    results = []
    for name, run in checks:
        t0 = time.perf_counter()
        try:
            status, detail = PASS, run()
        except Skip as why:
            status, detail = SKIP, str(why)
        except Exception as exc:  # a failed check is a row of the table, not the end of the command
            status, detail = FAIL, f"{type(exc).__name__}: {exc}".splitlines()[0]
            traceback.print_exc()
        results.append(Check(name, status, detail, time.perf_counter() - t0))
    return results


def table(device: torch.device, results: list[Check]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"gpu_check on {device} ({describe_device(device)}), torch {torch.__version__}", "",
             f"{'check':<{width}}  {'result':<8}{'seconds':>8}  detail"]
    lines += [f"{r.name:<{width}}  {r.status:<8}{r.seconds:>8.1f}  {r.detail}" for r in results]
    counts = {s: sum(r.status == s for r in results) for s in (PASS, FAIL, SKIP)}
    lines += ["", f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    device = pick_device(p.parse_args(argv).device)
    results = run_checks(device)
    print(table(device, results), flush=True)
    return 1 if any(r.status == FAIL for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
