"""Processes: data-parallel ranks under torchrun (gloo on CPU, NCCL on GPU), on one machine or
several, the collectives that keep every rank's decisions the same, the checks that every rank
sees rank 0's output directory and runs on the same inputs, and the signal flag that stops a run
at a step boundary.

Across machines (``torchrun --nnodes N``), ``RANK`` is the global rank and ``LOCAL_RANK`` the
rank on this machine (it picks the GPU). Only global rank 0 writes into the output directory;
the other ranks read what it wrote there (the feature cache, the checkpoint on ``--resume``), so
the directory must be on a filesystem every node shares, at the same path.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nci.manifest import ArtifactError

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


def check_shared_directory(path: Path, dist: Dist) -> None:
    """Fail on every rank unless every rank sees the file rank 0 writes into ``path`` (which it
    creates): across machines, ``path`` must be on a filesystem every node mounts there."""
    if not dist.on:
        return
    token = gather(dist, uuid.uuid4().hex)[0]  # rank 0's, on every rank
    probe = Path(path) / f".rank0-{token}"
    if dist.main:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(token)
    barrier(dist)
    seen = gather(dist, (socket.gethostname(), _appears(probe)))
    if dist.main:
        probe.unlink(missing_ok=True)
    blind = [f"rank {r} on {host}" for r, (host, ok) in enumerate(seen) if not ok]
    if blind:
        raise ArtifactError(
            f"{path}: {', '.join(blind)} cannot see the files rank 0 (on {seen[0][0]}) writes there; "
            "--out must be a directory that every node shares (a network filesystem mounted at the "
            "same path)"
        )


def _appears(path: Path, seconds: float = 5.0) -> bool:
    """Whether ``path`` exists, or shows up within ``seconds`` (a network filesystem's client
    may take a moment to see another machine's new file)."""
    deadline = time.monotonic() + seconds
    while not path.is_file():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def check_same_everywhere(dist: Dist, what: dict[str, str]) -> None:
    """Fail on every rank unless every rank holds the same values (say, digests of its inputs):
    across machines each node reads its own copies of the inputs and its own command line."""
    if not dist.on:
        return
    every = gather(dist, what)
    for name in what:
        differ = [r for r, other in enumerate(every) if other[name] != every[0][name]]
        if differ:
            raise ArtifactError(
                f"rank(s) {differ} have another {name} than rank 0 ({every[differ[0]][name]} vs "
                f"{every[0][name]}); start every node with the same options and the same copies of "
                "--data, --ids, --queries and the encoder"
            )


def rank_part(batch: np.ndarray, dist: Dist) -> tuple[np.ndarray, int]:
    """This rank's rows of a global batch (every ``world``-th row from its rank on) and how many
    of them are real. Every rank gets ``ceil(len(batch) / world)`` rows, as each must run the
    same forward and backward: a rank one short takes the batch's first row again as padding,
    which the loss ignores. So the ranks together train on exactly the global batch, the one a
    single process trains on."""
    part = batch[dist.rank :: dist.world]
    need = -(-len(batch) // dist.world)
    if len(part) < need:
        return np.concatenate([part, batch[: need - len(part)]]), len(part)
    return part, len(part)


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
