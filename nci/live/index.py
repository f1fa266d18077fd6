"""Live document additions and deletions on a loaded index, without retraining, made durable.

A :class:`LiveIndex` is the index's :class:`~nci.retrieval.Searcher` (the one search path) plus
its store of live updates (:mod:`nci.live.store`: SQLite by default, PostgreSQL for replicas):

- **Delete**: the document leaves the corpus and every method at once: the FAISS indexes skip its
  row, BM25 is rebuilt without it, and its leaf is pruned from the trie that NCI's beam search
  walks, with ancestors left without children.
- **Add**: the document is embedded with the index's query encoder (the encoder, pooling and
  length limit that embedded the corpus), gets a semantic id from the centroid rule
  (:mod:`nci.retrieval.id_space`), which reserves its place for the next training run, and is
  added to every method: the FAISS indexes (pq scores it exactly), BM25 rebuilt, and NCI's dense
  fallback (:mod:`nci.retrieval.nci`). ``nci train --resume`` over the documents exported by
  ``nci updates export`` then teaches the model their ids.

Every change is committed to the store before it is applied and acknowledged. A writer first
applies the entries other replicas wrote (inside its write transaction), so every replica
assigns ids from the same state; ``follow()`` applies new entries (the service calls it on a
timer). On start the store's net state is loaded through the same searcher, so whoever reads an
index directory (the server, a replica, or ``nci search`` after the server stopped) sees its
base files plus its live updates.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nci.live.lock import WriterLock
from nci.live.store import UPDATES, Entry, LiveStore, open_store, vec_from_text, vec_to_text
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
    ``add(documents)`` and ``delete(doc_id)`` change them and return only once the change is
    committed. With ``read_only`` nothing is written (writes raise). ``database_url`` (a
    ``postgresql://`` URL) shares the live updates between replicas; without it they live in
    ``updates_dir/live.sqlite3``, written by one process at a time (``updates_dir/LOCK``).
    """

    def __init__(
        self,
        index: Index,
        updates_dir: str | Path | None = None,
        read_only: bool = False,
        holder: str | None = None,
        database_url: str | None = None,
    ):
        self.index = index
        self.searcher = Searcher(index)
        self.corpus = self.searcher.corpus
        self.updates_dir = Path(updates_dir) if updates_dir else index.path / UPDATES
        self.read_only = read_only
        self.lock = self.searcher.lock
        self.seq = 0  # the last journal entry applied here
        self.writer_lock = WriterLock(self.updates_dir, holder)
        if not read_only and not database_url:
            self.writer_lock.acquire()  # before anything is read or written: one SQLite writer
        try:
            self.db: LiveStore | None = open_store(
                self.updates_dir, fingerprint(index.path), database_url, read_only
            )
            if self.db is not None and not read_only:
                self._migrate_legacy_log()
            self._load_state()
        except BaseException:
            self.writer_lock.release()
            raise

    def _load_state(self) -> None:
        if self.db is None:
            return
        state = self.db.state()
        try:
            if state.deleted:
                self.searcher.remove(state.deleted)
            self._add_now(state.added)
        except (KeyError, ValueError, TypeError) as e:
            raise ArtifactError(
                f"{self.db.url}: live updates cannot be loaded ({e}); restore a backup"
            ) from e
        self.seq = state.seq
        if state.seq:
            log.info(
                "live updates: %d entries (%s): %d added, %d deleted documents live",
                state.seq,
                self.db.url,
                len(state.added),
                len(state.deleted),
            )

    # -- what the searcher holds ---------------------------------------------------------------

    @property
    def store(self) -> dict[str, dict[str, str]]:
        """The live documents: doc id -> {"title", "text"}."""
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

    # -- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.corpus)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self.corpus

    def methods(self) -> dict[str, str | None]:
        return self.searcher.methods()

    def get(self, doc_id: str) -> dict[str, Any]:
        with self.lock.read():
            return self.corpus.get(doc_id)

    def counts(self) -> dict[str, int]:
        with self.lock.read():
            ids = self.corpus.ids
            return {
                "documents": len(self.corpus),
                "added": len(self.corpus.added),
                "deleted": len(self.corpus.deleted_built),
                "trie_nodes": ids.n if ids is not None else 0,
                "log_records": self.seq,
                "sequence": self.seq,
            }

    def search(self, method: str, queries: list[str], k: int, **options: Any) -> list[Hits]:
        """Up to ``k`` hits per query, best first, over the live documents."""
        available = self.methods()
        if method in available and available[method]:
            raise UpdateError(f"method '{method}' is not available in this index: {available[method]}")
        return self.searcher.search(method, queries, k, **options)

    def warm_up(self) -> dict[str, float]:
        return self.searcher.warm_up()

    # -- following other writers ---------------------------------------------------------------

    def follow(self) -> int:
        """Apply the entries other processes committed since the last one applied here; returns
        how many (the service calls this on a timer)."""
        if self.db is None:
            return 0
        entries = self.db.entries(self.seq)
        if entries:
            with self.lock.write():
                self._apply_entries(entries)
        return len(entries)

    def _apply_entries(self, entries: list[Entry]) -> None:
        for entry in entries:
            if entry.seq <= self.seq:
                continue  # applied meanwhile
            if entry.seq != self.seq + 1:
                raise ArtifactError(
                    f"{self.db.url}: entry {entry.seq} follows {self.seq}; the journal has a gap"
                )
            if entry.op == "add":
                self._add_now(entry.record["docs"])
            elif entry.op == "delete":
                self._delete_now(entry.record["id"])
            else:
                raise ArtifactError(f"{self.db.url}: entry {entry.seq} has unknown operation {entry.op!r}")
            self.seq = entry.seq

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
        db = self._writable()
        docs = [
            {"_id": check_doc_id(d["_id"]), "title": d.get("title") or "", "text": d.get("text") or ""}
            for d in documents
        ]
        if len({d["_id"] for d in docs}) != len(docs):
            twice = next(d["_id"] for i, d in enumerate(docs) if d["_id"] in {e["_id"] for e in docs[:i]})
            raise DocumentExists(f"document id {twice!r} appears twice in the request")
        if not docs:
            return []
        if vectors is None:
            vectors = self.embed(docs)
        with self.lock.write():
            with db.transaction() as tx:
                self._apply_entries(tx.entries(self.seq))  # what other replicas wrote first
                for d in docs:
                    if d["_id"] in self.corpus:
                        raise DocumentExists(f"a document with id {d['_id']!r} exists; delete it first")
                if self.corpus.ids is not None:
                    sids = self.corpus.plan_ids([(d["_id"], v) for d, v in zip(docs, vectors, strict=True)])
                    for d, sid in zip(docs, sids, strict=True):
                        d["sid"] = list(sid)
                for d, v in zip(docs, vectors, strict=True):
                    d["vec"] = vec_to_text(v)
                seq = tx.append("add", {"docs": docs, "time": time.time()}, self.corpus.built_rows)
            # committed: applied under the same lock, so searches see all of it or none
            self._add_now(docs)
            self.seq = seq
        return [
            {"id": d["_id"], "semantic_id": "-".join(map(str, d["sid"])) if "sid" in d else None}
            for d in docs
        ]

    def delete(self, doc_id: str) -> None:
        """Delete a live document durably; raises :class:`DocumentNotFound` for an unknown id."""
        db = self._writable()
        with self.lock.write():
            with db.transaction() as tx:
                self._apply_entries(tx.entries(self.seq))
                if doc_id not in self.corpus:
                    raise DocumentNotFound(f"no document with id {doc_id!r}")
                seq = tx.append("delete", {"id": doc_id, "time": time.time()}, self.corpus.built_rows)
            self._delete_now(doc_id)
            self.seq = seq

    def _add_now(self, docs: Sequence[dict[str, Any]]) -> None:
        if not docs:
            return
        live = [
            LiveDocument(
                d["_id"],
                d.get("title") or "",
                d.get("text") or "",
                vec_from_text(d["vec"], self.corpus.dim),
                tuple(d["sid"]) if d.get("sid") is not None else None,
            )
            for d in docs
        ]
        self.searcher.add(live)

    def _delete_now(self, doc_id: str) -> None:
        self.searcher.remove([doc_id])

    def _writable(self) -> LiveStore:
        if self.read_only or self.db is None:
            raise UpdateError(f"{self.updates_dir}: opened read-only; updates go through the server")
        return self.db

    # -- the earlier log format ----------------------------------------------------------------

    def _migrate_legacy_log(self) -> None:
        """Import an updates directory of the earlier format (``log.jsonl`` + ``snapshot-*``)
        into the database once, then move its files to ``legacy/``."""
        from nci.live.legacy import legacy_entries

        legacy = legacy_entries(self.updates_dir, fingerprint(self.index.path))
        if legacy is None:
            return
        if self.db.position():
            raise ArtifactError(
                f"{self.updates_dir}: holds both a database of live updates and a log of the earlier "
                "format; move one of them away"
            )
        built = set(self.corpus.built_rows)
        with self.db.transaction() as tx:
            for op, record in legacy:
                tx.append(op, record, built)
        moved = self.updates_dir / "legacy"
        moved.mkdir(exist_ok=True)
        for path in list(self.updates_dir.glob("snapshot-*")) + [self.updates_dir / "log.jsonl"]:
            if path.exists():
                os.replace(path, moved / path.name)
        log.info(
            "live updates of the earlier format imported: %d entries; old files in %s", len(legacy), moved
        )

    def compact(self) -> str:
        """Checkpoint SQLite's write-ahead log into the database file and vacuum it."""
        db = self._writable()
        if not hasattr(db, "conn") or not hasattr(db, "path"):
            return "nothing to compact: PostgreSQL manages its own storage"
        with self.lock.write():
            db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.conn.execute("VACUUM")
        return f"compacted {db.url}"

    def close(self) -> None:
        """Close the store and release the writer lock."""
        if self.db is not None:
            self.db.close()
            self.db = None
        self.writer_lock.release()


def open_live_index(
    path: str | Path,
    updates_dir: str | Path | None = None,
    read_only: bool = False,
    holder: str | None = None,
    database_url: str | None = None,
) -> LiveIndex:
    """``load_index`` plus its live updates (``holder`` says who writes, for the message a second
    writer gets; ``database_url`` a PostgreSQL database shared by replicas)."""
    return LiveIndex(
        load_index(path), updates_dir, read_only=read_only, holder=holder, database_url=database_url
    )
