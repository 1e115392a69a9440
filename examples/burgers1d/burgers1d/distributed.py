"""Single-process or torchrun (DistributedDataParallel) execution of a training stage.

runform launches a ``launcher: torchrun`` stage as ``torchrun --standalone --nproc_per_node=N -m
burgers1d.<stage> ...``; torchrun sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and
``LOCAL_WORLD_SIZE``. :func:`init_distributed` reads them, joins the process group (nccl on
CUDA, gloo on CPU) and picks the device; without them everything is a no-op and rank 0 is the
only rank. Only rank 0 (``ctx.is_main``) writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .runtime import configure_threads, select_device


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()

    def mean(self, value: float) -> float:
        """Mean of a scalar over ranks (the value itself when single-process)."""
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], device=self.device, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item()) / self.world_size

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` on this device, wrapped in DDP when distributed."""
        model = model.to(self.device)
        if not self.distributed:
            return model
        if self.device.type == "cuda":
            return DistributedDataParallel(model, device_ids=[self.local_rank])
        return DistributedDataParallel(model)


def init_distributed(device: str = "auto", num_threads: int | None = None) -> DistContext:
    """Read torchrun's environment, init the process group when WORLD_SIZE > 1, pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    dev = select_device(device, local_rank)
    if dev.type == "cpu":
        configure_threads(num_threads, local_world)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        try:  # device_id (torch >= 2.3) binds the NCCL communicator to this rank's GPU
            dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
        except TypeError:
            dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (after a final barrier)."""
    if ctx.distributed and dist.is_initialized():
        ctx.barrier()
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model
