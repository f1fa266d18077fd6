"""Reading live updates of the earlier format, to import them into the database once.

Earlier versions kept live updates in the updates directory as ``INDEX.json`` (the index build
they belong to), ``log.jsonl`` (one line per update: ``"<crc32 hex>\\t<json>\\n"``) and
``snapshot-<seq>/`` folders (the net state after update ``seq``: ``state.json``,
``documents.jsonl``, ``vectors.npy``, ``deleted.txt``). :func:`legacy_entries` turns such a
directory into journal entries; :class:`nci.live.LiveIndex` imports them and moves the files to
``legacy/``. A last line cut short by a kill (no newline) was never acknowledged and is skipped;
any other line that fails its checksum stops the import with a message.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from nci.manifest import ArtifactError

LOG = "log.jsonl"
INDEX_INFO = "INDEX.json"
SNAPSHOT = "snapshot-"


def _decode_line(line: bytes) -> dict[str, Any] | None:
    """The record of a whole, intact log line, else None."""
    if not line.endswith(b"\n") or len(line) < 10 or line[8:9] != b"\t":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("seq"), int) else None


def _check_index(directory: Path, index_fingerprint: str) -> None:
    info_path = directory / INDEX_INFO
    if not info_path.is_file():
        return
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(
            f"{info_path}: corrupt ({e}); restore it or move the updates directory away"
        ) from e
    if info.get("index") != index_fingerprint:
        raise ArtifactError(
            f"{directory}: these updates were made against another build of the index (its manifest "
            "changed since). Move the directory away to start without them, or point the service at "
            "the index build they belong to."
        )


def _snapshot_entries(snapshot: Path) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
    """The snapshot's sequence number and its net state as entries (deletions, then one addition)."""
    try:
        state = json.loads((snapshot / "state.json").read_text())
        deleted = (snapshot / "deleted.txt").read_text(encoding="utf-8").splitlines()
        vectors = np.load(snapshot / "vectors.npy")
        docs = [json.loads(line) for line in (snapshot / "documents.jsonl").read_text("utf-8").splitlines()]
        seq = int(state["seq"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{snapshot}: unreadable snapshot ({e}); move it away or restore a backup") from e
    if len(docs) != len(vectors):
        raise ArtifactError(f"{snapshot}: {len(docs)} documents but {len(vectors)} vectors")
    from nci.live.store import vec_to_text

    entries: list[tuple[str, dict[str, Any]]] = [("delete", {"id": d}) for d in deleted]
    if docs:
        entries.append(
            ("add", {"docs": [{**d, "vec": vec_to_text(v)} for d, v in zip(docs, vectors, strict=True)]})
        )
    return seq, entries


def legacy_entries(directory: str | Path, index_fingerprint: str) -> list[tuple[str, dict[str, Any]]] | None:
    """The earlier format's updates in ``directory`` as ``(op, record)`` entries, in order, or
    None when there are none."""
    directory = Path(directory)
    snapshots = sorted(p for p in directory.glob(f"{SNAPSHOT}*") if p.is_dir())
    log_path = directory / LOG
    if not snapshots and not log_path.is_file():
        return None
    _check_index(directory, index_fingerprint)
    seq, entries = _snapshot_entries(snapshots[-1]) if snapshots else (0, [])
    lines = log_path.read_bytes().splitlines(keepends=True) if log_path.is_file() else []
    for lineno, line in enumerate(lines, 1):
        record = _decode_line(line)
        if record is None:
            if lineno == len(lines) and not line.endswith(b"\n"):
                break  # cut short by a kill: never acknowledged
            raise ArtifactError(
                f"{log_path}:{lineno}: corrupt update record (bad checksum or JSON) in a complete line; "
                "restore the updates directory from a backup or move it away"
            )
        if record["seq"] <= seq:
            continue  # already in the snapshot
        if record["seq"] != seq + 1:
            raise ArtifactError(
                f"{log_path}:{lineno}: update {record['seq']} follows update {seq}; records are missing"
            )
        seq = record["seq"]
        op = record.get("op")
        if op == "add":
            entries.append(("add", {"docs": record["docs"]}))
        elif op == "delete":
            entries.append(("delete", {"id": record["id"]}))
        else:
            raise ArtifactError(f"{log_path}:{lineno}: unknown operation {op!r}")
    return entries
