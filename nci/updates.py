"""Live document additions and deletions on a loaded index, without retraining.

A :class:`LiveIndex` wraps a loaded :class:`nci.retrieval.Index` and keeps every method current:

- **Delete**: the document leaves the document store, the FAISS indexes (``remove_ids``), the BM25
  results (filtered at once, dropped at the next rebuild) and the docid trie: its leaf is pruned
  from the trie that beam search walks, and so are ancestors left without children. It disappears
  from every method's results at once.
- **Add**: the document is embedded with the index's query encoder (the encoder, pooling and
  length limit that embedded the corpus), added to the FAISS indexes and the document store, and
  marks BM25 for a rebuild over the live corpus before its next search (bm25s has no incremental
  add; rebuilding it over the 2,067 SQuAD paragraphs takes 0.3-0.7 s on two busy CPU cores). It gets a
  semantic id by descending the stored k-means centroids (rule below), which reserves its place in
  the docid trie for the next training run.
- **NCI and added documents**: the model has never seen an added document, so beam search walks
  only the trie of documents the model was trained on (the ids in the index's ``ids/``, less the
  deleted ones). Added documents reach NCI results through a dense fallback: the query is embedded
  with the query encoder and each added document that dense retrieval ranks in the top ``k`` is
  placed in the NCI ranking where dense retrieval would put it among NCI's own hits (before the
  first NCI hit with a lower dense score). Such hits carry ``source="dense"`` and the score of the
  NCI hit they follow, so the list stays sorted. ``nci train --resume`` over the documents exported
  by ``python -m nci.updates export`` then teaches the model their ids.

Semantic id of an added document (``x`` its vector, centroids as stored in ``ids/centroids.npy``
and kept current as documents come and go):

1. From the root, while the node's children are internal nodes, move to the child whose centroid
   is nearest to ``x`` (squared L2). This ends at a node whose children are leaves: a leaf group.
2. If the leaf group has a free digit, the document takes the smallest one. Digits of deleted
   documents are not reused while the process runs, so an id the model learned is never handed to
   another document.
3. If the group is full (``k`` digits used), look for room ever higher up: among the nodes below
   the group's parent, then below its grandparent, and so on, take the node nearest to ``x`` that
   is either a leaf group with a free digit (id: its path + the digit) or a node of internal
   children with a free digit (id: its path + the digit + 0, a new group of one). Ids never grow
   beyond the longest id the trie had when it was built, so the model can learn them.
4. If the whole trie is full, the addition is refused (rebuild the ids with a larger ``k``).

Durability. Updates live in a directory (default ``<index>/updates``)::

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

import argparse
import base64
import binascii
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nci.manifest import ArtifactError, fingerprint
from nci.retrieval import Index, load_index

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
UPDATES = "updates"
LOG = "log.jsonl"
INDEX_INFO = "INDEX.json"
SNAPSHOT = "snapshot-"
MAX_ID_CHARS = 200


class UpdateError(ValueError):
    """An update that cannot be applied; the subclass says why."""


class DocumentExists(UpdateError):
    """Adding a document whose id is already live."""


class DocumentNotFound(UpdateError, KeyError):
    """An unknown or already deleted document id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class IdSpaceFull(UpdateError):
    """No free digit is left anywhere in the docid trie."""


@dataclass(frozen=True)
class Hit:
    """One ranked result: document id, score, and which ranking produced it."""

    doc_id: str
    score: float
    source: str


def check_doc_id(doc_id: str) -> str:
    """Ids are single tokens (they end up in TSV qrels and run files): no whitespace."""
    if not isinstance(doc_id, str) or not doc_id:
        raise UpdateError("document id must be a non-empty string")
    if len(doc_id) > MAX_ID_CHARS:
        raise UpdateError(f"document id is {len(doc_id)} characters; the limit is {MAX_ID_CHARS}")
    if any(c.isspace() or not c.isprintable() for c in doc_id):
        raise UpdateError(f"document id {doc_id!r} contains whitespace or control characters")
    return doc_id


# --- the log and snapshots -------------------------------------------------------------------


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

    def open(self) -> tuple[Path | None, list[dict[str, Any]]]:
        """Prepare the directory; return the newest snapshot (or None) and the records after it.

        Drops a torn last line (an update that was never acknowledged) and stale temporary files.
        """
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
        info_path = d / INDEX_INFO
        if info_path.is_file():
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
                    f"{d}: these updates were made against another build of the index (its manifest "
                    "changed since). Move the directory away to start without them, or point the "
                    "service at the index build they belong to."
                )
        else:
            self._write_file_atomic(
                info_path,
                json.dumps({"version": FORMAT_VERSION, "index": self.index_fingerprint}, indent=2).encode()
                + b"\n",
            )
        for stale in d.glob(".*tmp*"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)

        snapshots = sorted(p for p in d.glob(f"{SNAPSHOT}*") if p.is_dir())
        snapshot = None
        if snapshots:
            snapshot = snapshots[-1]
            state = self.read_snapshot_state(snapshot)
            self.snapshot_seq = self.seq = int(state["seq"])

        records: list[dict[str, Any]] = []
        path = d / LOG
        good_bytes = 0
        if path.is_file():
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
            if good_bytes != path.stat().st_size:
                with open(path, "r+b") as f:
                    f.truncate(good_bytes)
                    f.flush()
                    os.fsync(f.fileno())
        self.pending = len(records)
        self._file = open(path, "ab")
        return snapshot, records

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


# --- the live docid trie ---------------------------------------------------------------------


class LiveTrie:
    """The docid trie with room to grow, its node centroids and document counts.

    Node numbering continues the built trie's; nodes are never reused. A deleted document's leaf
    stays allocated (dead) so its digit is not handed out again. ``decode_child`` is the trie that
    beam search walks: built nodes only, documents the model was trained on, deletions pruned.
    """

    def __init__(self, sem: Any, depth_limit: int | None = None):
        trie = sem.trie
        self.k = int(trie.k)
        n = trie.n_nodes
        self.n_built = n
        self.n = n
        cap = max(16, n * 2)
        self.child = np.full((cap, self.k), -1, dtype=np.int64)
        self.child[:n] = trie.child
        self.parent = np.full(cap, -1, dtype=np.int64)
        self.parent[:n] = trie.parent
        self.digit = np.full(cap, -1, dtype=np.int64)
        self.digit[:n] = trie.digit
        self.depth = np.zeros(cap, dtype=np.int64)
        self.depth[:n] = trie.depth
        self.is_leaf = np.zeros(cap, dtype=bool)
        self.is_leaf[:n] = np.asarray(trie.doc) >= 0
        centroids = np.asarray(sem.centroids, dtype=np.float32)
        self.centroids = np.zeros((cap, centroids.shape[1]), dtype=np.float32)
        self.centroids[:n] = centroids
        self.count = np.zeros(cap, dtype=np.int64)
        self.leaf_doc: dict[int, str] = {}
        self.doc_leaf: dict[str, int] = {}
        for node in np.flatnonzero(np.asarray(trie.doc) >= 0).tolist():
            doc_id = sem.doc_ids[int(trie.doc[node])]
            self.leaf_doc[node] = doc_id
            self.doc_leaf[doc_id] = node
            while node >= 0:
                self.count[node] += 1
                node = int(self.parent[node])
        self.depth_limit = max(int(trie.max_depth), int(depth_limit or 0))
        self.decode_doc = np.asarray(trie.doc, dtype=np.int64).copy()
        self.decode_child = np.asarray(trie.child, dtype=np.int64).copy()

    def _grow(self) -> None:
        cap = len(self.parent) * 2
        for name in ("child", "parent", "digit", "depth", "is_leaf", "centroids", "count"):
            old = getattr(self, name)
            new = np.zeros((cap, *old.shape[1:]), dtype=old.dtype)
            if name in ("child", "parent", "digit"):
                new[:] = -1
            new[: len(old)] = old
            setattr(self, name, new)

    def _new_node(self, parent: int, digit: int, leaf: bool) -> int:
        if self.n == len(self.parent):
            self._grow()
        node = self.n
        self.n += 1
        self.child[parent, digit] = node
        self.parent[node] = parent
        self.digit[node] = digit
        self.depth[node] = self.depth[parent] + 1
        self.is_leaf[node] = leaf
        return node

    def path(self, doc_id: str) -> tuple[int, ...] | None:
        node = self.doc_leaf.get(doc_id)
        if node is None:
            return None
        digits = []
        while node > 0:
            digits.append(int(self.digit[node]))
            node = int(self.parent[node])
        return tuple(reversed(digits))

    def _is_group(self, nodes: np.ndarray) -> np.ndarray:
        """Nodes whose children are leaves (or that have no children yet, besides the root)."""
        kids = self.child[nodes]
        has_internal = ((kids >= 0) & ~self.is_leaf[np.maximum(kids, 0)]).any(1)
        return ~has_internal & ~self.is_leaf[nodes]

    def assign(self, x: np.ndarray) -> tuple[int, ...]:
        """A free semantic id for vector ``x`` (the rule in the module docstring)."""
        node = 0
        while True:
            kids = self.child[node]
            kids = kids[kids >= 0]
            internal = kids[~self.is_leaf[kids]]
            if internal.size == 0:
                break
            node = int(internal[np.argmin(((self.centroids[internal] - x) ** 2).sum(1))])
        free = np.flatnonzero(self.child[node] < 0)
        if free.size and self.depth[node] + 1 <= self.depth_limit:
            return (*self._digits(node), int(free[0]))
        # Full: look for room below ever higher ancestors.
        nodes = np.arange(self.n)
        open_ = (self.child[: self.n] < 0).any(1) & ~self.is_leaf[: self.n]
        group = self._is_group(nodes)
        fits = np.where(group, self.depth[: self.n] + 1, self.depth[: self.n] + 2) <= self.depth_limit
        cand = nodes[open_ & fits]
        if cand.size == 0:
            raise IdSpaceFull(
                f"no free digit left in the docid trie (k={self.k}, longest id {self.depth_limit}); "
                "rebuild the semantic ids with a larger k (nci ids build --k) and retrain"
            )
        dist = ((self.centroids[cand] - x) ** 2).sum(1)
        anc = int(self.parent[node]) if node > 0 else 0
        while True:
            # ancestors of every candidate at the depth of ``anc``
            up = cand.copy()
            target = self.depth[anc]
            for _ in range(int(self.depth[: self.n].max()) + 1):
                deeper = self.depth[up] > target
                if not deeper.any():
                    break
                up[deeper] = self.parent[up[deeper]]
            inside = up == anc
            if inside.any():
                best = int(cand[inside][np.argmin(dist[inside])])
                digit = int(np.flatnonzero(self.child[best] < 0)[0])
                if self._is_group(np.array([best]))[0]:
                    return (*self._digits(best), digit)
                return (*self._digits(best), digit, 0)
            anc = int(self.parent[anc])

    def _digits(self, node: int) -> tuple[int, ...]:
        digits = []
        while node > 0:
            digits.append(int(self.digit[node]))
            node = int(self.parent[node])
        return tuple(reversed(digits))

    def insert(self, doc_id: str, digits: Sequence[int], x: np.ndarray) -> None:
        """Insert ``doc_id`` at ``digits``, creating nodes as needed; update centroids and counts."""
        if not digits or any(not 0 <= d < self.k for d in digits):
            raise ValueError(f"bad semantic id {tuple(digits)} for k={self.k}")
        node, path = 0, [0]
        for i, d in enumerate(digits):
            last = i == len(digits) - 1
            nxt = int(self.child[node, d])
            if nxt < 0:
                nxt = self._new_node(node, d, leaf=last)
            elif self.is_leaf[nxt] or last:
                raise ValueError(f"semantic id {tuple(digits)} is taken or extends another id")
            node = nxt
            path.append(node)
        self.leaf_doc[node] = doc_id
        self.doc_leaf[doc_id] = node
        for p in path:  # running mean; a new node's centroid becomes x
            self.count[p] += 1
            self.centroids[p] += (x - self.centroids[p]) / self.count[p]

    def remove(self, doc_id: str, x: np.ndarray | None) -> bool:
        """Retire ``doc_id``'s leaf and prune it from the decoding trie; True if the latter changed."""
        node = self.doc_leaf.pop(doc_id, None)
        if node is None:
            return False
        del self.leaf_doc[node]
        p = node
        while p >= 0:
            n = self.count[p]
            if x is not None and n > 1:
                self.centroids[p] = (self.centroids[p] * n - x) / (n - 1)
            self.count[p] = max(n - 1, 0)
            p = int(self.parent[p])
        if node >= self.n_built or self.decode_doc[node] < 0:
            return False
        # prune the leaf, then every ancestor left without children (never the root)
        self.decode_doc[node] = -1
        p = node
        while p > 0:
            parent = int(self.parent[p])
            self.decode_child[parent, int(self.digit[p])] = -1
            if parent == 0 or (self.decode_child[parent] >= 0).any():
                break
            p = parent
        return True

    def live_ids(self) -> dict[str, tuple[int, ...]]:
        return {doc_id: self._digits(node) for doc_id, node in self.doc_leaf.items()}


# --- searchable pieces -----------------------------------------------------------------------


class LiveFaiss:
    """A FAISS index with the doc id of each row; rows are appended and removed (``remove_ids``
    keeps the order of the remaining rows, so the id list is kept in step by deleting the entry)."""

    def __init__(self, index: Any, doc_ids: Sequence[str]):
        self.index = index
        self.rows = list(doc_ids)

    def add(self, doc_ids: Sequence[str], vectors: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.rows.extend(doc_ids)

    def remove(self, doc_id: str) -> None:
        row = self.rows.index(doc_id)
        self.index.remove_ids(np.array([row], dtype=np.int64))
        del self.rows[row]

    def search(self, vecs: np.ndarray, k: int, source: str) -> list[list[Hit]]:
        k = min(k, self.index.ntotal)
        if k <= 0:
            return [[] for _ in range(len(vecs))]
        scores, labels = self.index.search(vecs, k)
        return [
            [
                Hit(self.rows[i], float(s), source)
                for i, s in zip(li.tolist(), si.tolist(), strict=True)
                if i >= 0
            ]
            for li, si in zip(labels, scores, strict=True)
        ]


# --- the live index --------------------------------------------------------------------------


class LiveIndex:
    """An index directory plus its durable live updates; thread-safe (one lock for all state).

    ``search(method, queries, k, beam)`` ranks live documents with any available method;
    ``add(documents)`` and ``delete(doc_id)`` change them and return only once the change is on
    disk.
    """

    def __init__(
        self,
        index: Index,
        updates_dir: str | Path | None = None,
        snapshot_every: int = 1000,
        default_beam: int = 10,
    ):
        from nci.data import document_text

        self._document_text = document_text
        self.index = index
        self.updates_dir = Path(updates_dir) if updates_dir else index.path / UPDATES
        self.snapshot_every = snapshot_every
        self.default_beam = default_beam
        self.lock = threading.RLock()
        self.available = {m: reason for m, reason in index.methods().items()}
        self.store: dict[str, dict[str, str]] = dict(index.documents)
        self.built_rows = {doc_id: i for i, doc_id in enumerate(index.doc_ids)}
        if set(self.store) != set(self.built_rows):
            raise ArtifactError(f"{index.path}: documents.jsonl and doc_ids.txt list different documents")
        self.deleted_built: set[str] = set()
        self.added: dict[str, np.ndarray] = {}  # added live documents -> vector
        self._added_matrix: tuple[list[str], np.ndarray] | None = None
        self.dim = int(index.manifest.get("counts", {}).get("dimension") or index.embeddings.shape[1])
        self.stats = {"added": 0, "deleted": 0}

        self.dense = self._faiss("dense")
        self.pq = self._faiss("pq")
        self._bm25: Any = None
        self._bm25_stale: set[str] = set()  # deleted since the BM25 index was built
        self._bm25_dirty = False
        if not self.available.get("bm25"):
            self._bm25 = index.retriever("bm25")

        self.trie: LiveTrie | None = None
        self.sem_doc_ids: list[str] = []
        self.trained: set[str] = set()
        self.model: Any = None
        self._decode: Any = None
        if (index.path / "ids").is_dir():
            sem = index.semantic_ids()
            depth_limit = None
            if not self.available.get("nci"):
                self.model = index.nci_model()
                depth_limit = self.model.config.max_depth
                self.trained = set(sem.doc_ids)
            self.sem_doc_ids = list(sem.doc_ids)
            self.trie = LiveTrie(sem, depth_limit)
            if self.model is not None:
                self._refresh_decode()

        self.log = UpdateLog(self.updates_dir, fingerprint(index.path))
        snapshot, records = self.log.open()
        replayed = 0
        if snapshot is not None:
            self._load_snapshot(snapshot)
        for record in records:
            self._apply(record)
            replayed += 1
        if snapshot is not None or replayed:
            log.info(
                "updates: %s + %d log records replayed: %d added, %d deleted documents live",
                snapshot.name if snapshot else "no snapshot",
                replayed,
                len(self.added),
                len(self.deleted_built),
            )

    # -- loading ------------------------------------------------------------------------------

    def _faiss(self, method: str) -> LiveFaiss | None:
        if self.available.get(method):
            return None
        retriever = self.index.retriever(method)
        return LiveFaiss(retriever.index, self.index.doc_ids)

    @property
    def encoder(self) -> Any:
        return self.index.query_encoder

    def _refresh_decode(self) -> None:
        import torch

        from nci.decoding import ConstrainedDecoder, TrieTensors

        assert self.trie is not None
        device = self.model.device
        trie = TrieTensors(
            child=torch.as_tensor(self.trie.decode_child, dtype=torch.long, device=device),
            doc=torch.as_tensor(self.trie.decode_doc, dtype=torch.long, device=device),
            max_depth=int(self.trie.depth[: self.trie.n_built].max()),
        )
        if self._decode is None:
            self._decode = ConstrainedDecoder(self.model, trie)
        else:  # node numbering is stable: keep the per-node heads, swap the arrays
            self._decode.set_trie(trie)

    def _load_snapshot(self, snapshot: Path) -> None:
        state = UpdateLog.read_snapshot_state(snapshot)
        try:
            deleted = (snapshot / "deleted.txt").read_text(encoding="utf-8").splitlines()
            vectors = np.load(snapshot / "vectors.npy")
            docs = [
                json.loads(line) for line in (snapshot / "documents.jsonl").read_text("utf-8").splitlines()
            ]
        except (OSError, ValueError) as e:
            raise ArtifactError(
                f"{snapshot}: unreadable snapshot ({e}); move it away to fall back "
                "to the previous state, or restore a backup"
            ) from e
        if len(docs) != len(vectors) or (len(docs) and vectors.shape[1] != self.dim):
            raise ArtifactError(f"{snapshot}: {len(docs)} documents but vectors of shape {vectors.shape}")
        if state.get("counts", {}).get("added", len(docs)) != len(docs):
            raise ArtifactError(f"{snapshot}: state.json counts disagree with documents.jsonl")
        for doc_id in deleted:
            self._delete_now(doc_id)
        self._add_now(docs, vectors)

    def _apply(self, record: dict[str, Any]) -> None:
        op = record.get("op")
        try:
            if op == "add":
                docs = record["docs"]
                vectors = np.stack([_vec_from_text(d["vec"], self.dim) for d in docs]) if docs else None
                self._add_now(docs, vectors)
            elif op == "delete":
                self._delete_now(record["id"])
            else:
                raise ValueError(f"unknown operation {op!r}")
        except (KeyError, ValueError, TypeError, binascii.Error) as e:
            raise ArtifactError(
                f"{self.updates_dir / LOG}: update {record.get('seq')} cannot be replayed ({e}); restore "
                "the updates directory from a backup or move it away"
            ) from e

    # -- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self.store

    def methods(self) -> dict[str, str | None]:
        return dict(self.available)

    def get(self, doc_id: str) -> dict[str, Any]:
        with self.lock:
            doc = self.store.get(doc_id)
            if doc is None:
                raise DocumentNotFound(f"no document with id {doc_id!r}")
            sid = self.trie.path(doc_id) if self.trie else None
            return {
                "id": doc_id,
                "title": doc.get("title", ""),
                "text": doc.get("text", ""),
                "semantic_id": "-".join(map(str, sid)) if sid else None,
                "added": doc_id in self.added,
                "trained": doc_id in self.trained and doc_id not in self.added,
            }

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {
                "documents": len(self.store),
                "added": len(self.added),
                "deleted": len(self.deleted_built),
                "trie_nodes": self.trie.n if self.trie else 0,
                "log_records": self.log.pending,
                "sequence": self.log.seq,
            }

    def _vector(self, doc_id: str) -> np.ndarray:
        if doc_id in self.added:
            return self.added[doc_id]
        return np.asarray(self.index.embeddings[self.built_rows[doc_id]], dtype=np.float32)

    def search(self, method: str, queries: list[str], k: int, beam: int | None = None) -> list[list[Hit]]:
        """Up to ``k`` hits per query, best first, over the live documents."""
        if method not in self.available:
            raise ValueError(f"unknown method '{method}'; choose from {', '.join(self.available)}")
        if self.available[method]:
            raise UpdateError(f"method '{method}' is not available in this index: {self.available[method]}")
        if not queries:
            return []
        with self.lock:
            if method == "nci":
                return self._search_nci(queries, k, beam or max(k, self.default_beam))
            if method == "nci+dense":
                return self._search_hybrid(queries, k, beam or max(k, self.default_beam))
            if method == "bm25":
                return self._search_bm25(queries, k)
            vecs = self.encoder.encode(queries)
            return (self.dense if method == "dense" else self.pq).search(vecs, k, method)

    def _search_bm25(self, queries: list[str], k: int) -> list[list[Hit]]:
        if self._bm25_dirty:
            self._rebuild_bm25()
        stale = self._bm25_stale
        fetch = min(k + len(stale), len(self._bm25.doc_ids))
        results = self._bm25.search(queries, fetch)
        return [[Hit(d, s, "bm25") for d, s in hits if d not in stale][:k] for hits in results]

    def _rebuild_bm25(self) -> None:
        import bm25s

        cfg = self.index.manifest["methods"]["bm25"]
        old = self._bm25
        start = time.perf_counter()
        doc_ids = list(self.store)
        texts = [self._document_text(self.store[d]) for d in doc_ids]
        tokens = bm25s.tokenize(texts, stopwords=old.stopwords, stemmer=old.stemmer, show_progress=False)
        model = bm25s.BM25(k1=cfg.get("k1", 1.5), b=cfg.get("b", 0.75), method=cfg.get("variant", "lucene"))
        model.index(tokens, show_progress=False)
        self._bm25 = type(old)(
            old.name, model, doc_ids, stopwords=old.stopwords, stemmer_language=old.stemmer_language
        )
        self._bm25_stale = set()
        self._bm25_dirty = False
        log.info("BM25 rebuilt over %d live documents in %.2f s", len(doc_ids), time.perf_counter() - start)

    def _search_hybrid(self, queries: list[str], k: int, beam: int) -> list[list[Hit]]:
        """NCI's beam (dense fallback included) re-scored as ``nci.retrieval.HybridRetriever``."""
        from nci.retrieval import HYBRID_WEIGHT

        results = self._search_nci(queries, beam, beam)
        qv = self.encoder.encode(queries)
        out = []
        for q, hits in zip(qv, results, strict=True):
            scored = [
                Hit(h.doc_id, h.score + HYBRID_WEIGHT * float(self._vector(h.doc_id) @ q), "nci+dense")
                for h in hits
            ]
            out.append(sorted(scored, key=lambda h: -h.score)[:k])
        return out

    def _search_nci(self, queries: list[str], k: int, beam: int) -> list[list[Hit]]:
        model = self.model
        batch = model.tokenize(queries)
        memory, mask = model.encode(batch["input_ids"], batch["attention_mask"])
        labels, scores = self._decode(memory, mask, beam)
        labels, scores = labels[:, :k].cpu().numpy(), scores[:, :k].float().cpu().numpy()
        results = [
            [
                Hit(self.sem_doc_ids[i], float(s), "nci")
                for i, s in zip(li.tolist(), si.tolist(), strict=True)
                if i >= 0
            ]
            for li, si in zip(labels, scores, strict=True)
        ]
        if not self.added:
            return results
        # dense fallback for the documents the model has not been trained on
        if self._added_matrix is None:
            ids = list(self.added)
            self._added_matrix = (ids, np.stack([self.added[i] for i in ids]))
        ids, matrix = self._added_matrix
        qv = self.encoder.encode(queries)
        sims = qv @ matrix.T
        merged = []
        for q, hits in enumerate(results):
            top = np.argsort(-sims[q], kind="stable")[:k]
            fallback = [(ids[j], float(sims[q, j])) for j in top]
            hit_sims = [float(self._vector(h.doc_id) @ qv[q]) for h in hits]
            merged.append(merge_fallback(hits, hit_sims, fallback, k))
        return merged

    # -- writing ------------------------------------------------------------------------------

    def embed(self, documents: Sequence[dict[str, Any]]) -> np.ndarray:
        """Vectors for documents as the index embedded its corpus (call outside the lock: slow)."""
        texts = [
            self._document_text({"title": d.get("title") or "", "text": d.get("text") or ""})
            for d in documents
        ]
        return self.encoder.encode(texts)

    def add(
        self, documents: Sequence[dict[str, Any]], vectors: np.ndarray | None = None
    ) -> list[dict[str, Any]]:
        """Add documents (``{"_id", "title", "text"}``) durably; returns their ids and semantic ids.

        Raises :class:`DocumentExists` for an id that is live (or repeated in the batch) and
        :class:`IdSpaceFull` when the trie has no room; then nothing is added.
        """
        docs = [
            {"_id": check_doc_id(d["_id"]), "title": d.get("title") or "", "text": d.get("text") or ""}
            for d in documents
        ]
        seen: set[str] = set()
        for d in docs:
            if d["_id"] in seen:
                raise DocumentExists(f"document id {d['_id']!r} appears twice in the request")
            seen.add(d["_id"])
        if not docs:
            return []
        if vectors is None:
            vectors = self.embed(docs)
        with self.lock:
            for d in docs:
                if d["_id"] in self.store:
                    raise DocumentExists(f"a document with id {d['_id']!r} exists; delete it first")
            if self.trie is not None:
                # plan every id on a scratch copy of the trie's state, so a failure adds nothing
                sids = self._plan_ids(docs, vectors)
                for d, sid in zip(docs, sids, strict=True):
                    d["sid"] = list(sid)
            record = {
                "op": "add",
                "time": time.time(),
                "docs": [{**d, "vec": _vec_to_text(v)} for d, v in zip(docs, vectors, strict=True)],
            }
            self.log.append(record)
            self._add_now(docs, vectors)
            self._maybe_snapshot()
            return [
                {"id": d["_id"], "semantic_id": "-".join(map(str, d["sid"])) if "sid" in d else None}
                for d in docs
            ]

    def _plan_ids(self, docs: list[dict[str, Any]], vectors: np.ndarray) -> list[tuple[int, ...]]:
        import copy

        trie = self.trie if len(docs) == 1 else copy.deepcopy(self.trie)
        assert trie is not None
        sids = []
        for d, v in zip(docs, vectors, strict=True):
            sid = trie.assign(v)
            if len(docs) > 1:
                trie.insert(d["_id"], sid, v)
            sids.append(sid)
        return sids

    def _add_now(self, docs: Sequence[dict[str, Any]], vectors: np.ndarray | None) -> None:
        if not docs:
            return
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(docs), self.dim)
        for d, v in zip(docs, vectors, strict=True):
            doc_id = d["_id"]
            if doc_id in self.store:
                raise ValueError(f"document {doc_id!r} is already live")
            self.store[doc_id] = {"title": d.get("title") or "", "text": d.get("text") or ""}
            self.added[doc_id] = v
            if self.trie is not None and d.get("sid") is not None:
                self.trie.insert(doc_id, d["sid"], v)
        ids = [d["_id"] for d in docs]
        for faiss_index in (self.dense, self.pq):
            if faiss_index is not None:
                faiss_index.add(ids, vectors)
        self._bm25_dirty = True
        self._added_matrix = None
        self.stats["added"] += len(docs)

    def delete(self, doc_id: str) -> None:
        """Delete a live document durably; raises :class:`DocumentNotFound` for an unknown id."""
        with self.lock:
            if doc_id not in self.store:
                raise DocumentNotFound(f"no document with id {doc_id!r}")
            self.log.append({"op": "delete", "id": doc_id, "time": time.time()})
            self._delete_now(doc_id)
            self._maybe_snapshot()

    def _delete_now(self, doc_id: str) -> None:
        if doc_id not in self.store:
            raise ValueError(f"document {doc_id!r} is not live")
        x = self._vector(doc_id)
        if self.trie is not None and self.trie.remove(doc_id, x) and self.model is not None:
            self._refresh_decode()
        for faiss_index in (self.dense, self.pq):
            if faiss_index is not None:
                faiss_index.remove(doc_id)
        if doc_id in self.added:
            del self.added[doc_id]
            self._added_matrix = None
        else:
            self.deleted_built.add(doc_id)
        del self.store[doc_id]
        self._bm25_stale.add(doc_id)
        self.stats["deleted"] += 1

    # -- snapshots ----------------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        if self.log.pending >= self.snapshot_every:
            self.snapshot()

    def snapshot(self) -> Path | None:
        """Write the net state as a snapshot and empty the log (no-op when the log is empty)."""
        with self.lock:
            if self.log.pending == 0:
                return None
            ids = list(self.added)
            live = self.trie.live_ids() if self.trie else {}
            docs = [{"_id": i, **self.store[i], **({"sid": list(live[i])} if i in live else {})} for i in ids]
            vectors = np.stack([self.added[i] for i in ids]) if ids else np.zeros((0, self.dim), np.float32)
            path = self.log.write_snapshot(
                docs,
                vectors,
                sorted(self.deleted_built),
                {"added": len(ids), "deleted": len(self.deleted_built)},
            )
            log.info(
                "updates snapshot %s (%d added, %d deleted)", path.name, len(ids), len(self.deleted_built)
            )
            return path

    def close(self) -> None:
        """Snapshot pending updates and close the log."""
        with self.lock:
            if self.log._file is not None:
                self.snapshot()
                self.log.close()

    def warm_up(self) -> dict[str, float]:
        """Run one query through every available method (loads everything; fails early)."""
        seconds = {}
        for method, reason in self.available.items():
            if reason:
                continue
            start = time.perf_counter()
            try:
                self.search(method, ["warm up query"], k=1)
            except Exception as e:
                raise ArtifactError(
                    f"{self.index.path}: method '{method}' failed its warm-up query "
                    f"({type(e).__name__}: {e}); the index is corrupt or incomplete: rebuild it with "
                    "`nci index build`"
                ) from e
            seconds[method] = time.perf_counter() - start
        return seconds

    # -- export -------------------------------------------------------------------------------

    def export(self, out: str | Path, overwrite: bool = False) -> Path:
        """Write the live corpus (``corpus.jsonl``) and its semantic ids (``ids/``, an ``ids``
        artifact with every live document's id) for a training run that absorbs the updates."""
        from nci.manifest import atomic_output_dir, load_config, write_manifest
        from nci.semantic_ids import IdsConfig, node_centroids, write_docids
        from nci.trie import Trie

        if self.trie is None:
            raise ArtifactError(f"{self.index.path}: the index has no semantic ids to export")
        with self.lock:
            live = self.trie.live_ids()
            doc_ids = [d for d in self.store if d in live]
            ids = [live[d] for d in doc_ids]
            vectors = np.stack([self._vector(d) for d in doc_ids])
            corpus = [{"_id": d, **self.store[d]} for d in doc_ids]
        trie = Trie.build(ids, self.trie.k)
        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as f:
                for doc in corpus:
                    f.write(json.dumps(doc, ensure_ascii=False) + "\n")
            (tmp / "ids").mkdir()
            write_docids(tmp / "ids" / "docids.tsv", doc_ids, ids)
            trie.save(tmp / "ids")
            np.save(tmp / "ids" / "centroids.npy", node_centroids(trie, vectors))
            config = load_config(self.index.path / "ids", IdsConfig)
            write_manifest(
                tmp / "ids",
                stage="ids",
                config=config,
                inputs={"index": self.index.path},
                counts={
                    "documents": len(ids),
                    "trie_nodes": trie.n_nodes,
                    "max_depth": trie.max_depth,
                    "added": len(self.added),
                    "deleted": len(self.deleted_built),
                },
            )
        return Path(out)


def merge_fallback(
    hits: list[Hit], hit_sims: list[float], fallback: list[tuple[str, float]], k: int
) -> list[Hit]:
    """Place dense-fallback documents in an NCI ranking where dense retrieval would put them.

    ``hits`` is NCI's ranking and ``hit_sims`` the dense similarity of each of its documents to the
    query; each fallback document ``(id, similarity)`` goes before the first NCI hit with a lower
    similarity. It takes the score of the NCI hit before it (or the first hit's score), so scores
    stay non-increasing down the list; with no NCI hits at all it keeps its similarity.
    """
    fallback = sorted(fallback, key=lambda f: -f[1])
    out: list[Hit] = []
    j = 0
    for hit, sim in zip(hits, hit_sims, strict=True):
        while j < len(fallback) and fallback[j][1] > sim:
            score = out[-1].score if out else hit.score
            out.append(Hit(fallback[j][0], score, "dense"))
            j += 1
        out.append(hit)
    for doc_id, sim in fallback[j:]:
        out.append(Hit(doc_id, out[-1].score if out else sim, "dense"))
    return out[:k]


def open_live_index(
    path: str | Path,
    updates_dir: str | Path | None = None,
    snapshot_every: int = 1000,
    default_beam: int = 10,
) -> LiveIndex:
    """``load_index`` plus the replay of its live updates."""
    return LiveIndex(load_index(path), updates_dir, snapshot_every=snapshot_every, default_beam=default_beam)


# --- CLI -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Inspect and export an index's live updates.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("info", "print the live counts"),
        ("export", "write the live corpus and semantic ids (for nci train --resume)"),
        ("compact", "fold the update log into a snapshot"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--index", required=True, type=Path)
        p.add_argument("--updates", type=Path, default=None, help="updates directory (default INDEX/updates)")
        if name == "export":
            p.add_argument("--out", required=True, type=Path)
            p.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        live = open_live_index(args.index, args.updates)
    except ArtifactError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    try:
        if args.command == "info":
            print(json.dumps(live.counts(), indent=2))
        elif args.command == "export":
            live.export(args.out, overwrite=args.overwrite)
            print(args.out)
        else:
            path = live.snapshot()
            print(path or "nothing to compact")
    finally:
        live.log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
