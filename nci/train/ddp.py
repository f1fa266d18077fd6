"""Processes: data-parallel ranks under torchrun (gloo on CPU, NCCL on GPU), the collectives that
keep every rank's decisions the same, and the signal flag that stops a run at a step boundary."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

log = logging.getLogger("nci.train")


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1


def init_distributed(device_kind: str) -> Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as tdist

    backend = "nccl" if device_kind == "cuda" else "gloo"
    tdist.init_process_group(backend=backend)
    return Dist(
        rank=tdist.get_rank(), world=tdist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )


def barrier(dist: Dist) -> None:
    if dist.on:
        torch.distributed.barrier()


def all_sum(dist: Dist, values: list[float], device: torch.device) -> list[float]:
    if not dist.on:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def all_max(dist: Dist, values: Any, device: torch.device) -> Any:
    """Element-wise max over ranks (so every rank takes the same stop decision)."""
    if not dist.on:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.tolist()


def gather(dist: Dist, obj: Any) -> list[Any]:
    if not dist.on:
        return [obj]
    out: list[Any] = [None] * dist.world
    torch.distributed.all_gather_object(out, obj)
    return out


def shard(order: np.ndarray, dist: Dist) -> np.ndarray:
    """This rank's share of an epoch's examples (DistributedSampler's split, unshuffled)."""
    from torch.utils.data.distributed import DistributedSampler

    return order[list(DistributedSampler(range(len(order)), dist.world, dist.rank, shuffle=False))]


class StopFlag:
    """SIGINT/SIGTERM: finish the current step, checkpoint, exit non-zero. A second SIGINT aborts."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            "%s received: stopping after this step and saving a checkpoint", signal.Signals(signum).name
        )

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
