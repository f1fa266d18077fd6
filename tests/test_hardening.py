"""Service hardening: one writer per live state (real processes, SIGKILL), bounded work per
request, readers that do not wait on other methods, corruption that is never silently dropped,
and pq finding documents added on new topics."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from nci.live import open_live_index
from nci.live.lock import LiveStateLocked
from nci.manifest import ArtifactError
from nci.retrieval import Hit, Method, register, unregister
from service.app import create_app
from service.config import Settings
from service.snippets import snippet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def index_copy(tiny_index, tmp_path):
    return shutil.copytree(tiny_index, tmp_path / "index")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(index: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NCI_THREADS": "1"}
    cmd = [sys.executable, "-m", "nci.cli", "serve", "--index", str(index), "--port", str(port), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server never became ready")


# --- 1. two processes on one index --------------------------------------------------------------


@pytest.mark.slow  # real servers: about 30 s
def test_a_second_server_is_refused_at_once_and_no_acknowledged_write_is_lost(index_copy):
    port = free_port()
    a = serve(index_copy, port)
    try:
        wait_ready(port, a)
        url = f"http://127.0.0.1:{port}"
        doc = {"_id": "acked-1", "text": "an addition the first server acknowledged"}
        assert httpx.post(f"{url}/v1/documents", json={"documents": [doc]}, timeout=30).status_code == 201
        db_before = (index_copy / "updates" / "live.sqlite3").stat().st_mtime_ns
        # (a) same port: refused before loading anything, the journal untouched
        start = time.monotonic()
        same = serve(index_copy, port)
        out, _ = same.communicate(timeout=60)
        assert same.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in out, out
        # (b) another port, same index: refused at once, naming the holder
        other = serve(index_copy, free_port())
        out, _ = other.communicate(timeout=60)
        assert other.returncode == 2 and f"pid {a.pid}" in out and "held by" in out, out
        assert time.monotonic() - start < 45  # no index load in either (a load takes longer)
        assert (index_copy / "updates" / "live.sqlite3").stat().st_mtime_ns == db_before
        doc2 = {"_id": "acked-2", "text": "a second acknowledged addition"}
        assert httpx.post(f"{url}/v1/documents", json={"documents": [doc2]}, timeout=30).status_code == 201
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait()
    live = open_live_index(index_copy)  # the kill released the lock
    assert "acked-1" in live and "acked-2" in live
    live.close()


def test_a_second_writer_in_process_is_refused_and_readers_are_not(index_copy):
    first = open_live_index(index_copy)
    first.add([{"_id": "w1", "text": "written by the first"}])
    with pytest.raises(LiveStateLocked, match=r"held by pid \d+"):
        open_live_index(index_copy)
    assert "w1" in open_live_index(index_copy, read_only=True)  # readers take no lock
    first.close()
    second = open_live_index(index_copy)  # released on close
    assert "w1" in second
    second.close()


@pytest.mark.slow  # a real server
def test_the_port_opens_before_loading_and_readyz_is_503_until_loaded(index_copy):
    port = free_port()
    proc = serve(index_copy, port)
    url = f"http://127.0.0.1:{port}"
    seen: list[tuple[str, int, dict]] = []  # (route, status, body), alternating readyz and search
    try:
        deadline = time.monotonic() + 120
        while True:  # until /readyz says ready
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                r = httpx.get(f"{url}/readyz", timeout=5)
                seen.append(("readyz", r.status_code, r.json()))
                if r.status_code == 200:
                    break
                s = httpx.post(f"{url}/v1/search", json={"query": "topic"}, timeout=30)
                seen.append(("search", s.status_code, s.json()))
            except httpx.ConnectError:
                time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    statuses = [status for _, status, _ in seen]
    assert statuses[0] == 503, "the server answered only once loaded"
    assert statuses == sorted(statuses, reverse=True)  # 503 while loading, then 200 for good
    loading = [(route, body) for route, status, body in seen if status == 503]
    assert ("readyz", {"status": "loading"}) in loading
    assert all(route == "readyz" or "still loading" in body["detail"] for route, body in loading)


# --- 2. and 3. bounded work per request ---------------------------------------------------------


def quadratic_snippet_window(text: str, query: str, chars: int) -> int:
    """The window start the earlier, quadratic snippet picked (the reference)."""
    from service.snippets import _WORD, query_terms

    terms = query_terms(query)
    hits = [(m.start(), m.group().lower()) for m in _WORD.finditer(text) if m.group().lower() in terms]
    best, start = -1, 0
    for pos, _ in hits:
        s = max(0, pos - chars // 4)
        found = len({w for p, w in hits if s <= p < s + chars})
        if found > best:
            best, start = found, s
    return start


def test_snippets_pick_the_same_window_as_before_in_linear_time():
    from service.snippets import _WORD, best_window, query_terms

    rng = np.random.default_rng(0)
    words = "river bank money super bowl who what cat the a".split()
    for _ in range(500):
        text = " ".join(rng.choice(words, size=int(rng.integers(1, 300))))
        query = " ".join(rng.choice(words, size=int(rng.integers(1, 4))))
        chars = int(rng.choice([20, 60, 240]))
        terms = query_terms(query)
        hits = [(m.start(), m.group().lower()) for m in _WORD.finditer(text) if m.group().lower() in terms]
        assert best_window(hits, chars) == (quadratic_snippet_window(text, query, chars) if hits else 0)
    # Linear: the window reads each hit a bounded number of times (the quadratic one read n^2).
    hits = CountingList((5 * i, "word") for i in range(2_000))  # "word " * 2000
    best_window(hits, 240)
    assert hits.reads <= 10 * len(hits), hits.reads
    long = "word " * 20_000  # 100,000 characters of one word, the document limit
    assert snippet(long, "word", 240).startswith("word")


class CountingList(list):
    """A list that counts how many of its items are read."""

    reads = 0

    def __getitem__(self, i):
        self.reads += 1
        return super().__getitem__(i)

    def __iter__(self):
        for item in super().__iter__():
            self.reads += 1
            yield item


@pytest.mark.slow  # a real server
def test_healthz_answers_while_a_big_request_and_a_huge_document_are_searched(index_copy):
    port = free_port()
    proc = serve(index_copy, port)
    try:
        wait_ready(port, proc)
        url = f"http://127.0.0.1:{port}"
        huge = {"_id": "huge", "text": "zebra " * 16_000}
        assert httpx.post(f"{url}/v1/documents", json={"documents": [huge]}, timeout=60).status_code == 201
        big = {"queries": ["zebra topic"] * 64, "k": 150, "method": "dense"}  # 9,600 results
        latencies: list[float] = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                t = time.perf_counter()
                assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
                latencies.append(time.perf_counter() - t)
                time.sleep(0.02)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            for _ in range(3):
                r = httpx.post(f"{url}/v1/search", json=big, timeout=120)
                assert r.status_code == 200, r.text
                one = httpx.post(
                    f"{url}/v1/search", json={"query": "zebra", "k": 1, "method": "bm25"}, timeout=60
                )
                assert one.json()["results"][0]["id"] == "huge"
        finally:
            done.set()
            prober.join()
        assert latencies and max(latencies) < 1.0, max(latencies)  # was 18-21 s
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_requests_over_the_work_limits_are_refused_naming_the_limit(tiny_index, tmp_path):
    settings = Settings(index=tiny_index, updates_dir=tmp_path / "u", max_response_bytes=20_000)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/search", json={"queries": ["q"] * 64, "k": 1000, "method": "dense"})
        assert r.status_code == 422 and "max_results" in r.json()["detail"]
        r = client.post("/v1/search", json={"queries": ["q"] * 64, "k": 10, "method": "nci", "beam": 100})
        assert r.status_code == 422 and "max_beam_queries" in r.json()["detail"]
        r = client.post("/v1/search", json={"queries": ["topic"] * 60, "k": 60, "method": "dense"})
        assert r.status_code == 422 and "max_response_bytes" in r.json()["detail"]
        assert (
            client.post("/v1/search", json={"query": "topic", "k": 5, "method": "dense"}).status_code == 200
        )


@pytest.fixture
def slow_method():
    """A toy method whose search sleeps (a stand-in for a 60 s beam-100 batch)."""
    started = threading.Event()

    class Slow:
        name = "slow"

        def search(self, queries, k):
            started.set()
            time.sleep(3)
            return [[Hit("d1", 0.0, "slow")] for _ in queries]

    register(Method(name="slow", summary="sleeps", load=lambda ctx: Slow()))
    yield started
    unregister("slow")


def test_a_request_over_its_time_limit_gets_a_503(tiny_index, tmp_path, slow_method):
    settings = Settings(index=tiny_index, updates_dir=tmp_path / "u", request_timeout_s=0.5)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/search", json={"query": "q", "method": "slow"})
        assert r.status_code == 503 and "request_timeout_s" in r.json()["detail"]


# --- 4. readers do not wait on other methods ----------------------------------------------------


def test_a_slow_search_does_not_hold_up_other_methods(index_copy, slow_method):
    live = open_live_index(index_copy)
    live.warm_up()
    slow = threading.Thread(target=live.search, args=("slow", ["q"], 1))
    slow.start()
    assert slow_method.wait(10)
    t = time.perf_counter()
    assert live.search("bm25", ["topic 1"], 3)[0]
    assert live.search("dense", ["topic 1"], 3)[0]
    assert time.perf_counter() - t < 2.0  # not the slow search's 3 s
    slow.join()
    live.close()


def test_bm25_is_rebuilt_off_the_request_path_after_an_update(index_copy):
    live = open_live_index(index_copy)
    live.warm_up()
    bm25 = live.loaded("bm25")
    live.add([{"_id": "fresh", "text": "qqqzebra appears only here"}])
    deadline = time.monotonic() + 30
    while bm25.dirty and time.monotonic() < deadline:  # rebuilt by the background refresh
        time.sleep(0.05)
    assert not bm25.dirty
    assert live.search("bm25", ["qqqzebra"], 1)[0][0].doc_id == "fresh"
    live.close()


# --- 5. a corrupt complete last line ------------------------------------------------------------


def test_a_corrupt_complete_last_line_stops_the_start_and_keeps_its_bytes(index_copy):
    """In an updates directory of the earlier format (imported at the first start), a complete
    last line that fails its checksum is corruption, not a torn write: nothing is dropped."""
    import zlib

    from nci.manifest import fingerprint

    updates = index_copy / "updates"
    updates.mkdir()
    (updates / "INDEX.json").write_text(json.dumps({"version": 1, "index": fingerprint(index_copy)}))
    lines = []
    for seq, doc_id in ((1, "d1"), (2, "d2")):
        body = json.dumps({"seq": seq, "op": "delete", "id": doc_id}).encode()
        lines.append(b"%08x\t%s\n" % (zlib.crc32(body), body))
    lines[-1] = lines[-1].replace(b"d2", b"d3")  # whole line (newline kept), bad checksum
    (updates / "log.jsonl").write_bytes(b"".join(lines))
    with pytest.raises(ArtifactError, match=r"log.jsonl:2: corrupt update record .* complete line"):
        open_live_index(index_copy)
    assert (updates / "log.jsonl").read_bytes() == b"".join(lines)  # nothing truncated or moved
    # a last line cut short (no newline) is a torn write: skipped
    (updates / "log.jsonl").write_bytes(lines[0] + lines[1][:20])
    live = open_live_index(index_copy)
    assert "d1" not in live and "d2" in live
    live.close()


# --- 6. pq and documents added on new topics ----------------------------------------------------


def test_pq_finds_a_document_added_on_a_new_topic_for_its_own_text(index_copy):
    live = open_live_index(index_copy)
    texts = {
        f"new-{i}": f"{word} {word} glacier volcano lava tectonic plate subduction {i}"
        for i, word in enumerate(["obsidian", "basalt", "magma", "pumice", "rhyolite"])
    }
    live.add([{"_id": d, "text": t} for d, t in texts.items()])
    live.delete("d5")  # additions after a deletion are found too
    live.add([{"_id": "new-5", "text": "andesite andesite caldera eruption ash plume"}])
    texts["new-5"] = "andesite andesite caldera eruption ash plume"
    for doc_id, text in texts.items():
        assert live.search("pq", [text], 1)[0][0].doc_id == doc_id
        assert live.search("dense", [text], 1)[0][0].doc_id == doc_id
    live.close()


def test_fallback_scores_are_documented():
    schema = json.dumps(create_app(Settings()).openapi()["components"]["schemas"]["SearchHit"])
    assert "NCI hit ranked just above" in schema
