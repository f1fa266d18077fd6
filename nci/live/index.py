"""Live document additions and deletions on a loaded index, without retraining, made durable.

A :class:`LiveIndex` is the index's :class:`~nci.retrieval.Searcher` (the one search path)
plus its journal (:mod:`nci.live.journal`):

- **Delete**: the document leaves the corpus and every method at once: the FAISS indexes remove
  its row, BM25 filters it until its next rebuild, and its leaf is pruned from the trie that NCI's
  beam search walks, with ancestors left without children.
- **Add**: the document is embedded with the index's query encoder (the encoder, pooling and
  length limit that embedded the corpus), gets a semantic id from the centroid rule
  (:mod:`nci.retrieval.id_space`), which reserves its place for the next training run, and is
  added to every method: appended to the FAISS indexes, BM25 rebuilt before its next search, and
  NCI's dense fallback (:mod:`nci.retrieval.nci`). ``nci train --resume`` over the documents
  exported by ``nci updates export`` then teaches the model their ids.

Every change is written to the journal and ``fsync``-ed before it is applied and acknowledged.
On start the journal is replayed through the same searcher, so whoever reads an index directory
(the server, or ``nci search`` after the server stopped) sees its base files plus its journal.
"""

from __future__ import annotations

import binascii
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nci.live.journal import LOG, UPDATES, UpdateLog, _vec_from_text, _vec_to_text
from nci.manifest import ArtifactError, fingerprint
from nci.retrieval import Hits, Index, LiveDocument, Searcher, load_index
from nci.retrieval.errors import DocumentExists, DocumentNotFound, UpdateError

log = logging.getLogger(__name__)

MAX_ID_CHARS = 200


def check_doc_id(doc_id: str) -> str:
    """Ids are single tokens (they end up in TSV qrels and run files): no whitespace."""
    if not isinstance(doc_id, str) or not doc_id:
        raise UpdateError("document id must be a non-empty string")
    if len(doc_id) > MAX_ID_CHARS:
        raise UpdateError(f"document id is {len(doc_id)} characters; the limit is {MAX_ID_CHARS}")
    if any(c.isspace() or not c.isprintable() for c in doc_id):
        raise UpdateError(f"document id {doc_id!r} contains whitespace or control characters")
    return doc_id


class LiveIndex:
    """An index directory plus its durable live updates; thread-safe.

    ``search(method, queries, k, **options)`` ranks live documents with any available method;
    ``add(documents)`` and ``delete(doc_id)`` change them and return only once the change is on
    disk. With ``read_only`` the journal is replayed but never written (writes raise).
    """

    def __init__(
        self,
        index: Index,
        updates_dir: str | Path | None = None,
        snapshot_every: int = 1000,
        read_only: bool = False,
    ):
        self.index = index
        self.searcher = Searcher(index)
        self.corpus = self.searcher.corpus
        self.updates_dir = Path(updates_dir) if updates_dir else index.path / UPDATES
        self.snapshot_every = snapshot_every
        self.read_only = read_only
        self.lock = self.searcher.lock
        self.stats = {"added": 0, "deleted": 0}
        self.log = UpdateLog(self.updates_dir, fingerprint(index.path))
        snapshot, records = self.log.open(read_only=read_only)
        if snapshot is not None:
            self._load_snapshot(snapshot)
        for record in records:
            self._apply(record)
        if snapshot is not None or records:
            log.info(
                "updates: %s + %d log records replayed: %d added, %d deleted documents live",
                snapshot.name if snapshot else "no snapshot",
                len(records),
                len(self.corpus.added),
                len(self.corpus.deleted_built),
            )

    # -- what the searcher holds ---------------------------------------------------------------

    @property
    def store(self) -> dict[str, dict[str, str]]:
        return self.corpus.store

    @property
    def added(self) -> dict[str, np.ndarray]:
        return self.corpus.added

    @property
    def deleted_built(self) -> set[str]:
        return self.corpus.deleted_built

    @property
    def trie(self) -> Any:
        """The semantic id space (:class:`nci.retrieval.id_space.IdSpace`), or None."""
        return self.corpus.ids

    @property
    def encoder(self) -> Any:
        return self.index.query_encoder

    def loaded(self, method: str) -> Any:
        """The retriever object of ``method`` (loaded on first use; e.g. ``live.loaded("dense").rows``)."""
        return self.searcher.load(method)

    def retriever(self, method: str, **options: Any) -> Any:
        """``method`` with fixed options over the live documents: ``search(queries, k)``."""
        return self.searcher.retriever(method, **options)

    # -- replay -------------------------------------------------------------------------------

    def _load_snapshot(self, snapshot: Path) -> None:
        UpdateLog.read_snapshot_state(snapshot)
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
        state = UpdateLog.read_snapshot_state(snapshot)
        if len(docs) != len(vectors) or (len(docs) and vectors.shape[1] != self.corpus.dim):
            raise ArtifactError(f"{snapshot}: {len(docs)} documents but vectors of shape {vectors.shape}")
        if state.get("counts", {}).get("added", len(docs)) != len(docs):
            raise ArtifactError(f"{snapshot}: state.json counts disagree with documents.jsonl")
        if deleted:
            self.searcher.remove(deleted)
        self._add_now(docs, vectors)

    def _apply(self, record: dict[str, Any]) -> None:
        op = record.get("op")
        try:
            if op == "add":
                docs = record["docs"]
                vectors = (
                    np.stack([_vec_from_text(d["vec"], self.corpus.dim) for d in docs]) if docs else None
                )
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
        return len(self.corpus)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self.corpus

    def methods(self) -> dict[str, str | None]:
        return self.searcher.methods()

    def get(self, doc_id: str) -> dict[str, Any]:
        with self.lock:
            return self.corpus.get(doc_id)

    def counts(self) -> dict[str, int]:
        with self.lock:
            ids = self.corpus.ids
            return {
                "documents": len(self.corpus),
                "added": len(self.corpus.added),
                "deleted": len(self.corpus.deleted_built),
                "trie_nodes": ids.n if ids is not None else 0,
                "log_records": self.log.pending,
                "sequence": self.log.seq,
            }

    def search(self, method: str, queries: list[str], k: int, **options: Any) -> list[Hits]:
        """Up to ``k`` hits per query, best first, over the live documents."""
        available = self.methods()
        if method in available and available[method]:
            raise UpdateError(f"method '{method}' is not available in this index: {available[method]}")
        return self.searcher.search(method, queries, k, **options)

    def warm_up(self) -> dict[str, float]:
        return self.searcher.warm_up()

    # -- writing ------------------------------------------------------------------------------

    def embed(self, documents: Sequence[dict[str, Any]]) -> np.ndarray:
        """Vectors for documents as the index embedded its corpus (call outside the lock: slow)."""
        from nci.data import document_text

        texts = [
            document_text({"title": d.get("title") or "", "text": d.get("text") or ""}) for d in documents
        ]
        return self.encoder.encode(texts)

    def add(
        self, documents: Sequence[dict[str, Any]], vectors: np.ndarray | None = None
    ) -> list[dict[str, Any]]:
        """Add documents (``{"_id", "title", "text"}``) durably; returns their ids and semantic ids.

        Raises :class:`DocumentExists` for an id that is live (or repeated in the batch) and
        :class:`IdSpaceFull` when the trie has no room; then nothing is added.
        """
        self._check_writable()
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
                if d["_id"] in self.corpus:
                    raise DocumentExists(f"a document with id {d['_id']!r} exists; delete it first")
            if self.corpus.ids is not None:
                sids = self.corpus.plan_ids([(d["_id"], v) for d, v in zip(docs, vectors, strict=True)])
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

    def _add_now(self, docs: Sequence[dict[str, Any]], vectors: np.ndarray | None) -> None:
        if not docs:
            return
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(docs), self.corpus.dim)
        live = [
            LiveDocument(
                d["_id"],
                d.get("title") or "",
                d.get("text") or "",
                v,
                tuple(d["sid"]) if d.get("sid") is not None else None,
            )
            for d, v in zip(docs, vectors, strict=True)
        ]
        self.searcher.add(live)
        self.stats["added"] += len(docs)

    def delete(self, doc_id: str) -> None:
        """Delete a live document durably; raises :class:`DocumentNotFound` for an unknown id."""
        self._check_writable()
        with self.lock:
            if doc_id not in self.corpus:
                raise DocumentNotFound(f"no document with id {doc_id!r}")
            self.log.append({"op": "delete", "id": doc_id, "time": time.time()})
            self._delete_now(doc_id)
            self._maybe_snapshot()

    def _delete_now(self, doc_id: str) -> None:
        self.searcher.remove([doc_id])
        self.stats["deleted"] += 1

    def _check_writable(self) -> None:
        if self.read_only:
            raise UpdateError(f"{self.updates_dir}: opened read-only; updates go through the server")

    # -- snapshots ----------------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        if self.log.pending >= self.snapshot_every:
            self.snapshot()

    def snapshot(self) -> Path | None:
        """Write the net state as a snapshot and empty the log (no-op when the log is empty)."""
        self._check_writable()
        with self.lock:
            if self.log.pending == 0:
                return None
            corpus = self.corpus
            ids = list(corpus.added)
            live = corpus.ids.live_ids() if corpus.ids is not None else {}
            docs = [
                {"_id": i, **corpus.store[i], **({"sid": list(live[i])} if i in live else {})} for i in ids
            ]
            vectors = (
                np.stack([corpus.added[i] for i in ids]) if ids else np.zeros((0, corpus.dim), np.float32)
            )
            path = self.log.write_snapshot(
                docs,
                vectors,
                sorted(corpus.deleted_built),
                {"added": len(ids), "deleted": len(corpus.deleted_built)},
            )
            log.info(
                "updates snapshot %s (%d added, %d deleted)", path.name, len(ids), len(corpus.deleted_built)
            )
            return path

    def close(self) -> None:
        """Snapshot pending updates and close the log."""
        with self.lock:
            if self.log._file is not None:
                self.snapshot()
                self.log.close()


def open_live_index(
    path: str | Path,
    updates_dir: str | Path | None = None,
    snapshot_every: int = 1000,
    read_only: bool = False,
) -> LiveIndex:
    """``load_index`` plus the replay of its live updates."""
    return LiveIndex(load_index(path), updates_dir, snapshot_every=snapshot_every, read_only=read_only)
