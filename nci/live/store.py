"""Where live updates are kept: a database, behind one small interface.

Three tables per index (PostgreSQL keys every row by the index build's fingerprint, so indexes
can share a database; SQLite keeps one file per index, ``INDEX/updates/live.sqlite3``):

- ``nci_entries``: the journal, one row per acknowledged update, in order (``seq``);
- ``nci_documents``: the documents added live and still there, with their vector and semantic id;
- ``nci_deleted``: documents of the built index deleted live.

An update is one transaction: the journal entry and the net-state rows are written together, and
the update is acknowledged only after the commit (SQLite in write-ahead-log mode with
``synchronous=FULL``; PostgreSQL's own commit). Writers are serialised across processes
(``BEGIN IMMEDIATE``; a transaction-level advisory lock), and a writer first applies every entry
it has not seen, so replicas over one PostgreSQL database agree on every semantic id they assign.
At start a process loads the net state (no journal replay); replicas then follow the journal.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
import zlib
from collections.abc import Container, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nci.manifest import ArtifactError

FORMAT_VERSION = 2
UPDATES = "updates"  # the default updates directory, inside the index directory
SQLITE_FILE = "live.sqlite3"

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS nci_meta (index_key TEXT PRIMARY KEY, version INTEGER NOT NULL, "
    "created DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS nci_entries (index_key TEXT NOT NULL, seq BIGINT NOT NULL, op TEXT NOT NULL, "
    "record TEXT NOT NULL, time DOUBLE PRECISION NOT NULL, PRIMARY KEY (index_key, seq))",
    "CREATE TABLE IF NOT EXISTS nci_documents (index_key TEXT NOT NULL, doc_id TEXT NOT NULL, "
    "record TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (index_key, doc_id))",
    "CREATE TABLE IF NOT EXISTS nci_deleted (index_key TEXT NOT NULL, doc_id TEXT NOT NULL, "
    "seq BIGINT NOT NULL, PRIMARY KEY (index_key, doc_id))",
)


@dataclass(frozen=True)
class Entry:
    """One journal entry: ``op`` "add" (``record["docs"]``) or "delete" (``record["id"]``)."""

    seq: int
    op: str
    record: dict[str, Any]


@dataclass
class NetState:
    """What the journal adds up to: its position, the added documents still live (in the order
    they were added) and the deleted documents of the built index."""

    seq: int
    added: list[dict[str, Any]]
    deleted: list[str]


class Transaction(Protocol):
    def entries(self, after: int) -> list[Entry]: ...

    def append(self, op: str, record: dict[str, Any], built: Container[str]) -> int: ...


class LiveStore(Protocol):
    """The storage interface: net state, journal entries, and exclusive write transactions."""

    url: str

    def state(self) -> NetState: ...

    def entries(self, after: int) -> list[Entry]: ...

    def position(self) -> int: ...

    def transaction(self) -> Any: ...  # a context manager yielding a Transaction

    def close(self) -> None: ...


class SQLStore:
    """The tables above over a DB-API connection; the subclasses say how to connect and lock."""

    url = ""
    param = "?"

    def __init__(self, index_key: str, read_only: bool = False):
        self.index_key = index_key
        self.read_only = read_only
        self._mutex = threading.RLock()  # one connection, used by request threads and the follower

    # -- subclass hooks

    def _execute(self, sql: str, args: tuple = ()) -> Any:
        raise NotImplementedError

    @contextmanager
    def _write(self) -> Iterator[None]:
        raise NotImplementedError
        yield

    # -- setup

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self.param)

    def _prepare(self) -> None:
        with self._write():
            for statement in SCHEMA:
                self._execute(statement)
            row = self._execute(
                self._sql("SELECT version FROM nci_meta WHERE index_key = ?"), (self.index_key,)
            )
            found = row.fetchone()
            if found is None:
                self._execute(
                    self._sql("INSERT INTO nci_meta (index_key, version, created) VALUES (?, ?, ?)"),
                    (self.index_key, FORMAT_VERSION, time.time()),
                )
            elif found[0] != FORMAT_VERSION:
                raise ArtifactError(f"{self.url}: live updates format {found[0]}, expected {FORMAT_VERSION}")

    # -- reading

    def position(self) -> int:
        with self._mutex:
            row = self._execute(
                self._sql("SELECT MAX(seq) FROM nci_entries WHERE index_key = ?"), (self.index_key,)
            ).fetchone()
        return int(row[0] or 0)

    def entries(self, after: int) -> list[Entry]:
        with self._mutex:
            rows = self._execute(
                self._sql(
                    "SELECT seq, op, record FROM nci_entries WHERE index_key = ? AND seq > ? ORDER BY seq"
                ),
                (self.index_key, after),
            ).fetchall()
        return [Entry(int(seq), op, _decode(record, f"{self.url}: entry {seq}")) for seq, op, record in rows]

    def state(self) -> NetState:
        with self._mutex:
            seq = self.position()
            docs = self._execute(
                self._sql(
                    "SELECT doc_id, record FROM nci_documents WHERE index_key = ? ORDER BY seq, doc_id"
                ),
                (self.index_key,),
            ).fetchall()
            deleted = self._execute(
                self._sql("SELECT doc_id FROM nci_deleted WHERE index_key = ? ORDER BY seq, doc_id"),
                (self.index_key,),
            ).fetchall()
        added = [_decode(record, f"{self.url}: document {doc_id!r}") for doc_id, record in docs]
        return NetState(seq, added, [d for (d,) in deleted])

    # -- writing

    @contextmanager
    def transaction(self) -> Iterator[SQLStore]:
        """An exclusive write transaction across processes; commits on a clean exit."""
        if self.read_only:
            raise ArtifactError(f"{self.url}: opened read-only; updates go through the server")
        with self._mutex, self._write():
            yield self

    def append(self, op: str, record: dict[str, Any], built: Container[str]) -> int:
        """Write one entry and its net-state rows (inside :meth:`transaction`); returns its seq.
        ``built`` holds the documents of the built index (their deletion is a net-state row); any
        container: the corpus's own mapping, not a copy (a million ids take 100 ms to copy)."""
        seq = self.position() + 1
        key = self.index_key
        self._execute(
            self._sql("INSERT INTO nci_entries (index_key, seq, op, record, time) VALUES (?, ?, ?, ?, ?)"),
            (key, seq, op, _encode(record), time.time()),
        )
        if op == "add":
            for doc in record["docs"]:
                self._execute(
                    self._sql(
                        "INSERT INTO nci_documents (index_key, doc_id, record, seq) VALUES (?, ?, ?, ?)"
                    ),
                    (key, doc["_id"], _encode(doc), seq),
                )
        else:
            doc_id = record["id"]
            gone = self._execute(
                self._sql("DELETE FROM nci_documents WHERE index_key = ? AND doc_id = ?"), (key, doc_id)
            ).rowcount
            if not gone and doc_id in built:
                self._execute(
                    self._sql("INSERT INTO nci_deleted (index_key, doc_id, seq) VALUES (?, ?, ?)"),
                    (key, doc_id, seq),
                )
        return seq


def vec_to_text(v: np.ndarray) -> str:
    """A vector as base64 of little-endian float32 (exact, and JSON-safe)."""
    return base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode("ascii")


def vec_from_text(s: str, dim: int) -> np.ndarray:
    v = np.frombuffer(base64.b64decode(s, validate=True), dtype="<f4")
    if v.shape != (dim,):
        raise ValueError(f"vector has {v.size} values, the index has dimension {dim}")
    return v.astype(np.float32)


def _encode(record: dict[str, Any]) -> str:
    body = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    return f"{zlib.crc32(body.encode('utf-8')):08x}\t{body}"


def _decode(text: str, where: str) -> dict[str, Any]:
    """A stored record, its checksum checked (a database guards against torn writes; the
    checksum catches a record changed by hand or by a faulty disk)."""
    crc, _, body = text.partition("\t")
    try:
        if int(crc, 16) != zlib.crc32(body.encode("utf-8")):
            raise ValueError("checksum mismatch")
        record = json.loads(body)
    except ValueError as e:
        raise ArtifactError(
            f"{where}: corrupt live-update record ({e}); restore the database from a backup"
        ) from None
    return record


class SQLiteStore(SQLStore):
    """The embedded default: one SQLite file, write-ahead log, synchronous commits."""

    def __init__(self, path: str | Path, index_key: str, read_only: bool = False):
        super().__init__(index_key, read_only)
        self.path = Path(path)
        self.url = str(self.path)
        if read_only:
            self.conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self._refuse_other_builds()
            self._prepare()
        self.conn.execute("PRAGMA busy_timeout=30000")

    def _refuse_other_builds(self) -> None:
        try:
            keys = [k for (k,) in self.conn.execute("SELECT index_key FROM nci_meta")]
        except sqlite3.OperationalError:  # a new file: no tables yet
            return
        if keys and self.index_key not in keys:
            raise ArtifactError(
                f"{self.path.parent}: these updates were made against another build of the index (its "
                "manifest changed since). Move the directory away to start without them, or point the "
                "service at the index build they belong to."
            )

    def _execute(self, sql: str, args: tuple = ()) -> Any:
        return self.conn.execute(sql, args)

    @contextmanager
    def _write(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")  # takes the database's write lock now, not at first write
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class PostgresStore(SQLStore):
    """PostgreSQL (psycopg 3), for replicas that share one database (``NCI_DATABASE_URL``)."""

    param = "%s"

    def __init__(self, url: str, index_key: str, read_only: bool = False):
        import psycopg

        super().__init__(index_key, read_only)
        self.url = _redact(url)
        try:
            self.conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as e:
            raise ArtifactError(f"{self.url}: cannot connect to the database ({e})".strip()) from e
        # the advisory lock that serialises writers of this index: 63 bits of its key
        self.lock_key = int(index_key[:15], 16)
        if not read_only:
            self._prepare()

    def _execute(self, sql: str, args: tuple = ()) -> Any:
        return self.conn.execute(sql, args)

    @contextmanager
    def _write(self) -> Iterator[None]:
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (self.lock_key,))
            yield

    def close(self) -> None:
        self.conn.close()


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def open_store(
    updates_dir: Path, index_key: str, database_url: str | None, read_only: bool
) -> LiveStore | None:
    """PostgreSQL when ``database_url`` names one, else the SQLite file in ``updates_dir``.
    Read-only with no SQLite file yet: None (no updates)."""
    if database_url:
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise ArtifactError(
                f"NCI_DATABASE_URL: {_redact(database_url)!r} is not a postgresql:// URL; leave it unset "
                "for the embedded SQLite database"
            )
        return PostgresStore(database_url, index_key, read_only)
    path = Path(updates_dir) / SQLITE_FILE
    if read_only and not path.is_file():
        return None
    return SQLiteStore(path, index_key, read_only)
