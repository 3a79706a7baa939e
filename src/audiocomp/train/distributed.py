"""DistributedDataParallel under `torchrun`: NCCL on GPUs, gloo on CPUs, rank 0 does all the writing.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything here is a no-op. Under torchrun even one
process trains with DDP (a world of one), so that one GPU exercises the NCCL path that several would take.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launched: bool = False  # by torchrun (WORLD_SIZE set)

    @property
    def enabled(self) -> bool:
        return self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    env = os.environ
    return Dist(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)), "WORLD_SIZE" in env)


def init(device: torch.device) -> Dist:
    """Join the process group torchrun describes (once); returns this process's place in it."""
    d = from_env()
    if d.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(d.local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return d


def local_device(device: torch.device, d: Dist) -> torch.device:
    """One GPU per process: cuda -> cuda:LOCAL_RANK."""
    return torch.device("cuda", d.local_rank) if device.type == "cuda" and d.enabled else device


def backend() -> str | None:
    return dist.get_backend() if dist.is_initialized() else None


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks (epoch loss and counts for the log)."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (rank states for the checkpoint)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sync_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to all ranks so that every rank evaluates the same model."""
    if dist.is_initialized():
        for b in model.buffers():
            dist.broadcast(b, 0)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
