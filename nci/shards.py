"""Splitting a chunked stage (``nci embed``, ``nci querygen generate``) across processes or machines.

Both stages already work in chunks kept in ``<out>.partial/`` (``chunk-<start>.*``, one file set
per chunk, its last file renamed into place when the chunk is done) beside a ``plan.json`` that
names the settings and inputs the chunks were made with. A shard is a disjoint set of those
chunks: shard ``I/N`` (``0 <= I < N``) computes chunk ``c`` (the ``c``-th, counting from 0) when
``c % N == I``. Any number of shards write into the same ``<out>.partial/`` (so, across machines,
on a filesystem they all see), in any order or at once; a chunk's content depends only on the
plan, so the merged output is the one a single process writes. Merging is a run that only
assembles (``--merge``), or any run without ``--shard``, which also computes what is missing.

Under ``torchrun`` (``WORLD_SIZE > 1``) a process is shard ``RANK/WORLD_SIZE``: the processes
join a gloo group, rank 0 opens ``<out>.partial/`` first, every rank computes its chunks, and
after a barrier rank 0 merges.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from nci.manifest import ArtifactError

log = logging.getLogger(__name__)

# A rank waits at the barrier for the slowest shard; a failed rank ends the whole launch
# (torchrun stops the others), so a long timeout only ever waits for work that is running.
BARRIER_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``; ``launched``: one of torchrun's processes, in a process group."""

    index: int
    count: int
    launched: bool = False

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: write I/N with 0 <= I < N (N >= 1)")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"1/4"`` -> Shard(1, 4)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise ValueError(f"--shard '{text}': write I/N, e.g. 0/4 for the first of four shards")
        return cls(int(match[1]), int(match[2]))

    def owns(self, chunk: int) -> bool:
        """Whether chunk number ``chunk`` (0, 1, ...) is this shard's."""
        return chunk % self.count == self.index

    @property
    def merges(self) -> bool:
        """The process that assembles the output under torchrun."""
        return self.launched and self.index == 0

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def threads_per_process() -> int:
    """This machine's cores shared among the processes torchrun started on it."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def add_shard_arguments(parser: argparse.ArgumentParser) -> None:
    """``--shard I/N`` and ``--merge`` (under torchrun the rank picks the shard)."""
    parser.add_argument(
        "--shard",
        type=_shard_argument,
        default=None,
        metavar="I/N",
        help="compute only shard I of N (0 <= I < N: the chunks whose number modulo N is I) into "
        "OUT.partial/ and write no output; under torchrun each rank is shard RANK/WORLD_SIZE",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="compute nothing: assemble OUT from the chunks every shard wrote (fails if one is missing)",
    )


def _shard_argument(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


@contextlib.contextmanager
def launched(shard: Shard | None = None, merge: bool = False) -> Iterator[Shard | None]:
    """The shard this process runs: ``shard`` as given, or under torchrun (``WORLD_SIZE > 1``)
    ``RANK/WORLD_SIZE``, in a gloo group joined for the barrier; None for the whole stage."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if shard is not None and merge:
        raise ValueError("--shard computes one shard and --merge assembles them: give one of the two")
    if world <= 1:
        yield shard
        return
    if shard is not None or merge:
        raise ValueError(
            "under torchrun every rank is shard RANK/WORLD_SIZE and rank 0 merges: "
            "leave out --shard and --merge"
        )
    import torch.distributed as tdist

    tdist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        yield Shard(tdist.get_rank(), tdist.get_world_size(), launched=True)
    finally:
        tdist.destroy_process_group()


def barrier(shard: Shard | None) -> None:
    if shard is not None and shard.launched:
        import torch.distributed as tdist

        tdist.barrier()


def open_partial(partial: Path, plan: dict[str, Any], shard: Shard | None, merge: bool = False) -> Path:
    """``partial`` holding ``plan``. A single process (``shard`` None, not ``merge``) discards
    chunks made under another plan, as does rank 0 under torchrun, which opens it before the
    other ranks do. An explicit shard or a merge never discards: another shard may be writing
    there, so a different plan is an error that says what to do."""
    if shard is not None and shard.launched:
        if shard.index == 0:
            _open(partial, plan, discard=True)
        barrier(shard)
        if shard.index == 0:
            return partial
    elif shard is None and not merge:
        return _open(partial, plan, discard=True)
    if merge and not (partial / "plan.json").is_file():
        raise ArtifactError(
            f"{partial}: no chunks to merge; run the shards first (--shard I/N), or run without --merge"
        )
    return _open(partial, plan, discard=False)


def _open(partial: Path, plan: dict[str, Any], discard: bool) -> Path:
    plan_path = partial / "plan.json"
    if partial.exists():
        found = json.loads(plan_path.read_text()) if plan_path.is_file() else None
        if found == plan:
            return partial
        if not discard:
            raise ArtifactError(
                f"{partial}: its chunks were made with other settings, data or model than this run's "
                f"(plan.json differs). Run every shard with the same options and inputs, or delete {partial} "
                "to start over"
            )
        log.info("discarding %s: it was made with other settings, data or model", partial)
        shutil.rmtree(partial)
    # Created whole (plan included) and renamed into place, so that shards starting at once
    # never see a directory without its plan: the first rename wins, the others find its plan.
    partial.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial.with_name(f".{partial.name}.{uuid.uuid4().hex[:12]}.tmp")
    tmp.mkdir()
    (tmp / "plan.json").write_text(json.dumps(plan, indent=2))
    try:
        os.rename(tmp, partial)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return _open(partial, plan, discard=False)
    return partial


def stops_after_its_chunks(shard: Shard | None, partial: Path, n_chunks: int) -> bool:
    """Whether this process writes no output: an explicit shard (which says what comes next) or,
    under torchrun, any rank but 0."""
    if shard is None or shard.merges:
        return False
    if not shard.launched:
        log.info(
            "shard %s: its chunks (of %d) are in %s; when every shard is done, run again with --merge",
            shard,
            n_chunks,
            partial,
        )
    return True


def temporary_name(path: Path) -> Path:
    """A name beside ``path`` that no other process writing the same chunk uses."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def check_complete(partial: Path, done: Sequence[bool], shard: Shard | None) -> None:
    """Fail, naming the chunks, unless every chunk is done."""
    missing = [c for c, ok in enumerate(done) if not ok]
    if not missing:
        return
    shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
    hint = (
        "every rank finished its chunks, so the ranks do not share one filesystem: put --out on a path "
        "every node sees"
        if shard is not None and shard.launched
        else "shard I/N computes the chunks whose number modulo N is I; run the missing shards, or run "
        "without --merge to compute them here"
    )
    raise ArtifactError(
        f"{partial}: {len(missing)} of {len(done)} chunks are missing (chunk {shown}); {hint}"
    )
