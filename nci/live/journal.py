"""The journal of a live index: a checksummed, append-only log of updates plus snapshots.

Updates live in a directory (default ``<index>/updates``)::

    INDEX.json                    the index build this directory belongs to (manifest hash)
    log.jsonl                     one line per acknowledged update: "<crc32 hex>\\t<json>\\n"
    snapshot-<seq>/               the net state after update <seq>: state.json, documents.jsonl
                                  (added documents with vector row and semantic id), vectors.npy,
                                  deleted.txt (deleted documents of the built index)

An update is acknowledged only after its log line is written and ``fsync``-ed. Every ``N`` updates
(and on a clean close) the net state is written as a new snapshot (temporary directory, ``fsync``,
rename) and the log is replaced by an empty one (temporary file, rename); older snapshots are
removed after that. On start the newest snapshot is loaded and the log lines after it are
replayed. A line cut short by a kill (no newline, or a bad checksum) can only be the last one:
it was never acknowledged and is dropped; a bad line anywhere else, or updates made against
another build of the index, stop the start with a message saying what to do.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from nci.manifest import ArtifactError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
UPDATES = "updates"
LOG = "log.jsonl"
INDEX_INFO = "INDEX.json"
SNAPSHOT = "snapshot-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode_line(record: dict[str, Any]) -> bytes:
    body = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return b"%08x\t%s\n" % (zlib.crc32(body), body)


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


def _vec_to_text(v: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode("ascii")


def _vec_from_text(s: str, dim: int) -> np.ndarray:
    v = np.frombuffer(base64.b64decode(s, validate=True), dtype="<f4")
    if v.shape != (dim,):
        raise ValueError(f"vector has {v.size} values, the index has dimension {dim}")
    return v.astype(np.float32)


class UpdateLog:
    """Append-only, checksummed update log with snapshot compaction (layout in the module doc)."""

    def __init__(self, directory: str | Path, index_fingerprint: str):
        self.directory = Path(directory)
        self.index_fingerprint = index_fingerprint
        self.seq = 0  # last update written
        self.snapshot_seq = 0
        self.pending = 0  # log records since the last snapshot
        self._file: Any = None

    # reading

    def open(self, read_only: bool = False) -> tuple[Path | None, list[dict[str, Any]]]:
        """Return the newest snapshot (or None) and the records after it.

        Writable (a server): prepares the directory, truncates a torn last line (an update cut
        short, never acknowledged) and removes stale temporary files. Read-only (``nci search``
        over an index a server updated): changes nothing and ignores a torn last line.
        """
        d = self.directory
        if read_only and not d.is_dir():
            return None, []
        if not read_only:
            self._check_writable()
        info_path = d / INDEX_INFO
        if info_path.is_file():
            self._check_info(info_path)
        elif not read_only:
            info = {"version": FORMAT_VERSION, "index": self.index_fingerprint}
            self._write_file_atomic(info_path, json.dumps(info, indent=2).encode() + b"\n")
        if not read_only:
            for stale in d.glob(".*tmp*"):
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)

        snapshots = sorted(p for p in d.glob(f"{SNAPSHOT}*") if p.is_dir() and not p.name.startswith("."))
        snapshot = snapshots[-1] if snapshots else None
        if snapshot is not None:
            self.snapshot_seq = self.seq = int(self.read_snapshot_state(snapshot)["seq"])
        records, good_bytes = self._read_records(d / LOG)
        if not read_only:
            path = d / LOG
            if path.is_file() and good_bytes != path.stat().st_size:
                with open(path, "r+b") as f:
                    f.truncate(good_bytes)
                    f.flush()
                    os.fsync(f.fileno())
            self._file = open(path, "ab")
        self.pending = len(records)
        return snapshot, records

    def _check_writable(self) -> None:
        d = self.directory
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = d / ".write-probe.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise ArtifactError(
                f"{d}: cannot write live updates there ({e.strerror}); make it writable or choose another "
                "updates directory (NCI_UPDATES_DIR / --updates)"
            ) from e

    def _check_info(self, info_path: Path) -> None:
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            raise ArtifactError(
                f"{info_path}: corrupt ({e}); it names the index build these updates belong to: "
                "restore it or move the updates directory away"
            ) from e
        if info.get("version") != FORMAT_VERSION:
            raise ArtifactError(
                f"{info_path}: updates format {info.get('version')}, expected {FORMAT_VERSION}"
            )
        if info.get("index") != self.index_fingerprint:
            raise ArtifactError(
                f"{self.directory}: these updates were made against another build of the index (its "
                "manifest changed since). Move the directory away to start without them, or point the "
                "service at the index build they belong to."
            )

    def _read_records(self, path: Path) -> tuple[list[dict[str, Any]], int]:
        """The records after the snapshot, and the bytes of whole lines (a torn tail excluded)."""
        records: list[dict[str, Any]] = []
        good_bytes = 0
        if not path.is_file():
            return records, good_bytes
        with open(path, "rb") as f:
            lines = f.readlines()
        for lineno, line in enumerate(lines, 1):
            record = _decode_line(line)
            if record is None:
                if lineno == len(lines):
                    log.warning(
                        "%s:%d: dropping a torn last line (an update cut short, never acknowledged)",
                        path,
                        lineno,
                    )
                    break
                raise ArtifactError(
                    f"{path}:{lineno}: corrupt update record (bad checksum or JSON) before the end of "
                    "the log; restore the updates directory from a backup or move it away"
                )
            good_bytes += len(line)
            if record["seq"] <= self.seq:
                continue  # already in the snapshot (a kill between snapshot and log reset)
            if record["seq"] != self.seq + 1:
                raise ArtifactError(
                    f"{path}:{lineno}: update {record['seq']} follows update {self.seq}; the log is "
                    "missing records. Restore the updates directory from a backup or move it away"
                )
            self.seq = record["seq"]
            records.append(record)
        return records, good_bytes

    @staticmethod
    def read_snapshot_state(snapshot: Path) -> dict[str, Any]:
        path = snapshot / "state.json"
        try:
            state = json.loads(path.read_text())
            int(state["seq"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ArtifactError(f"{path}: unreadable snapshot state ({e}); move {snapshot} away") from e
        return state

    # writing

    def append(self, record: dict[str, Any]) -> int:
        """Write one update durably (write + fsync); returns its sequence number."""
        if self._file is None:
            raise RuntimeError("the update log is not open")
        seq = self.seq + 1
        self._file.write(_encode_line({"seq": seq, **record}))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.seq = seq
        self.pending += 1
        return seq

    def write_snapshot(
        self,
        documents: list[dict[str, Any]],
        vectors: np.ndarray,
        deleted: Iterable[str],
        counts: dict[str, int],
    ) -> Path:
        """Write the net state after update ``self.seq`` as a new snapshot, then reset the log."""
        d = self.directory
        name = f"{SNAPSHOT}{self.seq:012d}"
        tmp = Path(tempfile.mkdtemp(dir=d, prefix=f".{name}.tmp-"))
        try:
            with open(tmp / "documents.jsonl", "wb") as f:
                for doc in documents:
                    f.write(json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n")
                f.flush()
                os.fsync(f.fileno())
            with open(tmp / "vectors.npy", "wb") as f:
                np.save(f, np.ascontiguousarray(vectors, dtype=np.float32))
                f.flush()
                os.fsync(f.fileno())
            with open(tmp / "deleted.txt", "wb") as f:
                f.write("".join(f"{i}\n" for i in deleted).encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            state = {
                "version": FORMAT_VERSION,
                "seq": self.seq,
                "index": self.index_fingerprint,
                "created": time.time(),
                "counts": counts,
            }
            with open(tmp / "state.json", "wb") as f:
                f.write(json.dumps(state, indent=2).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(tmp)
            final = d / name
            if final.exists():  # a snapshot of this very seq already exists (nothing changed since)
                shutil.rmtree(tmp)
            else:
                os.rename(tmp, final)
            _fsync_dir(d)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # Only now is the log redundant: replace it by an empty one, then drop older snapshots.
        self._file.close()
        self._write_file_atomic(d / LOG, b"")
        self._file = open(d / LOG, "ab")
        self.snapshot_seq = self.seq
        self.pending = 0
        for old in d.glob(f"{SNAPSHOT}*"):
            if old.is_dir() and old.name < name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def _write_file_atomic(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
