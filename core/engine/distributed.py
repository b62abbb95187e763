"""Multi-process training under torchrun (DistributedDataParallel): `torchrun --nproc_per_node=N -m core train ...`.

Each process (rank) trains on its own shard of every epoch's batch order; DDP averages the gradients. After each
epoch rank 0's weights and buffers (BatchNorm statistics) are broadcast, so every rank evaluates the same model on
the same validation images and reaches the same best-epoch and early-stopping decisions; a stop is agreed at epoch
ends. Only rank 0 writes the run folder (the others write to a throwaway one) and the bundle. gloo on CPU, nccl on
CUDA. Without torchrun's environment (WORLD_SIZE unset or 1) nothing here is active: the app stays single-process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_world: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's share of an epoch's batch order (every rank drew the same order from the same seed)."""
        return order[self.rank::self.world]

    def shard_size(self, n: int) -> int:
        return len(range(self.rank, n, self.world))

    def wrap(self, net: nn.Module, device: torch.device) -> nn.Module:
        return nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    def sum(self, *values: torch.Tensor) -> list[torch.Tensor]:
        flat = torch.stack([v.detach().double().reshape(()) for v in values])
        tdist.all_reduce(flat)
        return list(flat)

    def any(self, flag: bool) -> bool:
        t = torch.tensor([1.0 if flag else 0.0])
        tdist.all_reduce(t)
        return bool(t.item())

    def sync_from_main(self, model: nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank (buffers such as BatchNorm statistics are per rank)."""
        for t in model.state_dict().values():
            tdist.broadcast(t.data, 0)

    def barrier(self) -> None:
        tdist.barrier()


def setup(device: torch.device) -> Dist | None:
    """The process group when started by torchrun with more than one process, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Dist(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_WORLD_SIZE", world)))


def teardown(d: Dist | None) -> None:
    if d is not None and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def is_main_process() -> bool:
    """Rank 0, or not distributed: the process that prints and writes."""
    return int(os.environ.get("RANK", "0")) == 0
