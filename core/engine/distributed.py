"""Multi-process training under torchrun (DistributedDataParallel): `torchrun --nproc_per_node=N -m core train ...`.

Each process (rank) trains on its own shard of every epoch's batch order; DDP averages the gradients. After each
epoch rank 0's weights and buffers (BatchNorm statistics) are broadcast, so every rank evaluates the same model on
the same validation images and reaches the same best-epoch and early-stopping decisions; a stop is agreed at epoch
ends. Only rank 0 writes the run folder (the others write to a throwaway one) and the bundle. gloo on CPU, nccl on
CUDA. On CUDA every rank works on its own GPU, `cuda:LOCAL_RANK` (core/device.pick_device), and every tensor a
collective receives is put on that device first (nccl takes CUDA tensors only). Without torchrun's environment
(WORLD_SIZE unset or 1) nothing here is active: the app stays single-process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn

from core.device import local_rank


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_world: int
    device: torch.device  # this rank's device: every collective's tensors live here

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's share of an epoch's batch order (every rank drew the same order from the same seed)."""
        return order[self.rank::self.world]

    def shard_size(self, n: int) -> int:
        return len(range(self.rank, n, self.world))

    def wrap(self, net: nn.Module) -> nn.Module:
        return nn.parallel.DistributedDataParallel(
            net, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def sum(self, *values: torch.Tensor | int | float) -> list[torch.Tensor]:
        """Each value summed over the ranks (as float64 on this rank's device)."""
        flat = torch.stack([torch.as_tensor(v).detach().to(self.device, torch.float64).reshape(()) for v in values])
        tdist.all_reduce(flat)
        return list(flat)

    def any(self, flag: bool) -> bool:
        (count,) = self.sum(1.0 if flag else 0.0)
        return bool(count.item() > 0)

    def sync_from_main(self, model: nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank (buffers such as BatchNorm statistics are per rank)."""
        for t in model.state_dict().values():
            if t.device == self.device:
                tdist.broadcast(t.data, 0)
            else:  # a tensor kept elsewhere goes through this rank's device
                on_device = t.data.to(self.device)
                tdist.broadcast(on_device, 0)
                t.data.copy_(on_device)

    def barrier(self) -> None:
        tdist.barrier()


def setup(device: torch.device) -> Dist | None:
    """The process group when started by torchrun with more than one process, else None. `device` is the rank's
    (core/device.pick_device: `cuda:LOCAL_RANK` on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if device.type == "cuda":
        device = torch.device("cuda", local_rank() if device.index is None else device.index)
        torch.cuda.set_device(device)  # before the group: nccl binds each rank to the current device
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_WORLD_SIZE", world)), device)


def teardown(d: Dist | None) -> None:
    if d is not None and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def is_main_process() -> bool:
    """Rank 0, or not distributed: the process that prints and writes."""
    return int(os.environ.get("RANK", "0")) == 0
