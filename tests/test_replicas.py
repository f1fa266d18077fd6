"""Replicas over one PostgreSQL database: writes through one are found through the others within
the follow interval, ids agree, a replica killed mid-stream loses no acknowledged write and
catches up after a restart. Needs a PostgreSQL server: NCI_TEST_DATABASE_URL (``.ci/run`` starts
one from Debian's packages); skipped without it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from nci.live import open_live_index

ROOT = Path(__file__).resolve().parents[1]
URL = os.environ.get("NCI_TEST_DATABASE_URL")
pytestmark = pytest.mark.skipif(not URL, reason="needs NCI_TEST_DATABASE_URL (a PostgreSQL server)")


@pytest.fixture
def database():
    """A fresh database on the test server, dropped afterwards."""
    import psycopg

    name = f"nci_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with psycopg.connect(URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_two_replicas_agree_on_documents_and_ids(tiny_index, tmp_path, database):
    a = open_live_index(tiny_index, tmp_path / "a", database_url=database)
    b = open_live_index(tiny_index, tmp_path / "b", database_url=database)  # no writer lock with a database
    [added] = a.add([{"_id": "via-a", "text": "written through replica a"}])
    assert b.follow() == 1 and "via-a" in b and b.seq == a.seq == 1
    # b writes next: it applies what it has not seen first, so the ids it plans cannot collide
    a.delete("d2")
    [other] = b.add([{"_id": "via-b", "text": "written through replica b"}])
    assert "d2" not in b and b.seq == 3 and other["semantic_id"] != added["semantic_id"]
    a.follow()
    assert a.trie.live_ids() == b.trie.live_ids() and set(a.store) == set(b.store)
    assert a.search("dense", ["written through replica b"], 1)[0][0].doc_id == "via-b"

    # concurrent writers: every addition lands once, with distinct ids everywhere
    def write(live, prefix):
        for i in range(5):
            live.add([{"_id": f"{prefix}{i}", "text": f"concurrent {prefix} {i}"}])

    threads = [threading.Thread(target=write, args=(r, p)) for r, p in ((a, "a"), (b, "b"))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    a.follow(), b.follow()
    assert a.seq == b.seq == 13 and a.trie.live_ids() == b.trie.live_ids()
    assert len(set(a.trie.live_ids().values())) == len(a.trie.live_ids())
    fresh = open_live_index(tiny_index, tmp_path / "c", database_url=database, read_only=True)
    assert fresh.trie.live_ids() == a.trie.live_ids() and fresh.seq == 13  # from the net state
    for live in (a, b, fresh):
        live.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(index: Path, port: int, database: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NCI_THREADS": "1", "NCI_DATABASE_URL": database}
    cmd = [sys.executable, "-m", "nci.cli", "serve", "--index", str(index), "--port", str(port)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def wait_ready(url: str, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/readyz", timeout=1)
            if r.status_code == 200:
                return r.json()["journal"]
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never became ready")


@pytest.mark.slow  # two real servers, one killed and restarted: about a minute
def test_replicas_behind_one_database_see_each_others_writes_and_survive_a_kill(
    tiny_index, tmp_path, database
):
    index = shutil.copytree(tiny_index, tmp_path / "index")  # read-only for both: updates in the database
    ports = free_port(), free_port()
    procs = [serve(index, p, database) for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url in urls:
            wait_ready(url)
        doc = {"_id": "seen-1", "text": "written through the first replica"}
        assert httpx.post(f"{urls[0]}/v1/documents", json={"documents": [doc]}, timeout=30).status_code == 201
        t = time.monotonic()
        while httpx.get(f"{urls[1]}/v1/documents/seen-1", timeout=5).status_code != 200:
            assert time.monotonic() - t < 1.0, "not visible through the other replica within 1 s"
            time.sleep(0.05)
        # a stream of writes through replica 1, killed in the middle
        acked: list[str] = []

        def stream() -> None:
            for i in range(200):
                body = {"documents": [{"_id": f"k{i}", "text": f"kill stream {i}"}]}
                try:
                    if httpx.post(f"{urls[1]}/v1/documents", json=body, timeout=30).status_code == 201:
                        acked.append(f"k{i}")
                except httpx.HTTPError:
                    return

        writer = threading.Thread(target=stream)
        writer.start()
        while len(acked) < 10:
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait()
        writer.join()
        time.sleep(0.5)  # replica 0 follows within the interval
        for doc_id in acked:
            assert httpx.get(f"{urls[0]}/v1/documents/{doc_id}", timeout=5).status_code == 200, doc_id
        procs[1] = serve(index, ports[1], database)  # restarted: loads the net state
        position = wait_ready(urls[1])
        assert position == wait_ready(urls[0]) and position >= len(acked) + 1
        for doc_id in acked:
            assert httpx.get(f"{urls[1]}/v1/documents/{doc_id}", timeout=5).status_code == 200, doc_id
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
