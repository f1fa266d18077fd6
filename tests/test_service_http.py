"""HTTP hardening of the service: bounded metrics labels, client disconnects, body time limit and
draining, strict integers, HEAD, the read key on /metrics, offline docs, the Content-Type hint,
and quiet third-party loggers. Behaviours that need a real socket run against uvicorn on a free
loopback port."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings

LIMIT = 4096  # max_body_bytes of the in-process test apps (the settings allow 1024 and up)
SERVER_LIMIT = 65536  # max_body_bytes of the real server: bodies over it arrive in several reads
BODY_TIMEOUT_S = 1.5


def settings_for(index: Path, updates: Path, limit: int = LIMIT, **overrides) -> Settings:
    """Settings with a short body time limit. ``model_copy`` sets ``body_timeout_s`` whether or
    not service/config.py declares the field yet (the app reads it with a default)."""
    body_timeout_s = overrides.pop("body_timeout_s", BODY_TIMEOUT_S)
    settings = Settings(index=index, updates_dir=updates, max_body_bytes=limit, **overrides)
    return settings.model_copy(update={"body_timeout_s": body_timeout_s})


@pytest.fixture(scope="module")
def client(tiny_index, tmp_path_factory):
    with TestClient(create_app(settings_for(tiny_index, tmp_path_factory.mktemp("u")))) as c:
        yield c


def keyed_client(index: Path, tmp_path: Path, **overrides) -> TestClient:
    return TestClient(create_app(settings_for(index, tmp_path / "u", api_key="s3cret", **overrides)))


@pytest.fixture(scope="module")
def server(tiny_index, tmp_path_factory):
    """A real uvicorn server on a loopback port (bound here, so no other process can take it)."""
    app = create_app(settings_for(tiny_index, tmp_path_factory.mktemp("server-u"), SERVER_LIMIT))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    while httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code != 200:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not get ready"
        time.sleep(0.05)
    yield port
    srv.should_exit = True
    thread.join(30)
    sock.close()


def head(path: str, *lines: str) -> bytes:
    return ("\r\n".join([f"POST {path} HTTP/1.1", "Host: test", *lines]) + "\r\n\r\n").encode()


def read_response(conn: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (or the timeout)."""
    conn.settimeout(timeout)
    data = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def metrics_text(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


def wait_for_metric(port: int, needle: str, seconds: float = 5.0) -> str:
    deadline = time.monotonic() + seconds
    while True:
        text = metrics_text(port)
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


# --- 1. metrics labels --------------------------------------------------------------------------


def test_made_up_verbs_share_one_metrics_label(client):
    for verb in ("FOOBAR", "BREW", "X-MADE-UP-1"):
        assert client.request(verb, "/v1/search").status_code == 405
    client.request("PROPFIND", "/healthz")
    client.get("/healthz")
    text = client.get("/metrics").text
    verbs = set(re.findall(r'nci_http_requests_total\{[^}]*verb="([^"]*)"', text))
    assert "other" in verbs and "GET" in verbs
    assert verbs <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}, verbs


# --- 2. client disconnects ----------------------------------------------------------------------


def test_client_disconnect_before_the_response_is_499_not_500(server):
    conn = socket.create_connection(("127.0.0.1", server))
    conn.sendall(head("/v1/search", "Content-Type: application/json", "Content-Length: 100"))
    conn.sendall(b'{"query": ')
    time.sleep(0.1)
    conn.close()
    needle = 'nci_http_requests_total{route="unmatched",status="499",verb="POST"}'
    text = wait_for_metric(server, needle)
    assert needle in text
    assert 'status="500"' not in text


# --- 3. body time limit -------------------------------------------------------------------------


def test_a_body_shorter_than_its_content_length_gets_408(server):
    conn = socket.create_connection(("127.0.0.1", server))
    start = time.monotonic()
    conn.sendall(head("/v1/search", "Content-Type: application/json", "Content-Length: 100"))
    conn.sendall(b'{"query": "topic"}')
    response = read_response(conn, timeout=BODY_TIMEOUT_S + 8)
    took = time.monotonic() - start
    conn.close()
    assert response.startswith(b"HTTP/1.1 408"), response[:200]
    assert b"connection: close" in response.lower()
    assert f"{BODY_TIMEOUT_S:g} s".encode() in response and b"NCI_BODY_TIMEOUT_S" in response
    assert BODY_TIMEOUT_S - 0.1 <= took < BODY_TIMEOUT_S + 5
    assert 'status="408"' in metrics_text(server)


def test_a_body_that_arrives_in_time_is_served(server):
    conn = socket.create_connection(("127.0.0.1", server))
    body = b'{"query": "topic", "method": "bm25", "k": 2}'
    conn.sendall(head("/v1/search", "Content-Type: application/json", "Transfer-Encoding: chunked"))
    conn.sendall(chunk(body[:10]))
    time.sleep(0.2)
    conn.sendall(chunk(body[10:]) + b"0\r\n\r\n")
    conn.settimeout(10)
    response = conn.recv(65536)
    conn.close()
    assert response.startswith(b"HTTP/1.1 200"), response[:300]


# --- 7. oversized bodies are drained, so the client reads the 413 -----------------------------


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_an_oversized_body_is_drained_and_the_client_reads_413(server, framing):
    """The body arrives in two parts with a pause between; the server answers only once it has
    read all of it, so closing the connection (the client asked for that) resets nothing."""
    parts = [b"x" * (2 * SERVER_LIMIT), b"y" * (3 * SERVER_LIMIT)]
    size = sum(map(len, parts))
    framing_header = "Transfer-Encoding: chunked" if framing == "chunked" else f"Content-Length: {size}"
    conn = socket.create_connection(("127.0.0.1", server))
    conn.sendall(head("/v1/documents", "Content-Type: application/json", framing_header, "Connection: close"))
    conn.sendall(chunk(parts[0]) if framing == "chunked" else parts[0])
    time.sleep(0.3)
    conn.sendall(chunk(parts[1]) + b"0\r\n\r\n" if framing == "chunked" else parts[1])
    response = read_response(conn)
    conn.close()
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert f"{SERVER_LIMIT} bytes".encode() in response


def test_a_chunked_body_many_times_the_limit_gets_413(server):
    """A client that sends the whole body before it reads (httpx does) reads the 413 too, also
    when it asked to close the connection after the response."""

    def body():
        for _ in range(6):
            yield b"z" * SERVER_LIMIT

    r = httpx.post(
        f"http://127.0.0.1:{server}/v1/documents",
        content=body(),
        headers={"Content-Type": "application/json", "Connection": "close"},
        timeout=10,
    )
    assert r.status_code == 413 and f"{SERVER_LIMIT} bytes" in r.json()["detail"]


def test_a_body_past_the_drain_bound_gets_413_and_the_connection_closes(client):
    big = b"x" * (8 * LIMIT + 1)
    r = client.post("/v1/documents", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.headers["connection"] == "close"

    def parts():
        for _ in range(9):
            yield b"x" * LIMIT

    r = client.post("/v1/documents", content=parts(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.headers["connection"] == "close"
    # within the bound the body is read, so the connection can stay open
    r = client.post("/v1/documents", content=b"x" * (2 * LIMIT), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "connection" not in r.headers


# --- 4. integers are integers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,field",
    [
        ({"k": True}, "k"),
        ({"k": False}, "k"),
        ({"k": "5"}, "k"),
        ({"beam": True}, "beam"),
        ({"beam": "10"}, "beam"),
        ({"method": "pq", "options": {"rerank": True}}, "options.rerank"),
        ({"method": "pq", "options": {"rerank": "4"}}, "options.rerank"),
    ],
)
def test_booleans_and_strings_are_not_integers(client, body, field):
    r = client.post("/v1/search", json={"query": "topic", **body})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"{field}: expected a") and "got a " in detail, detail


def test_integers_are_still_integers(client):
    for body in ({"k": 5}, {"k": 5.0, "beam": 6}, {"method": "pq", "options": {"rerank": 4}}):
        r = client.post("/v1/search", json={"query": "topic", **body})
        assert r.status_code == 200, (body, r.text)
    r = client.post("/v1/search", json={"query": "topic", "k": 1.5})
    assert r.status_code == 422 and r.json()["detail"].startswith("k: ")


# --- 5. HEAD ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/healthz", "/readyz", "/metrics", "/v1/index", "/v1/documents/d1", "/v1/documents/nope", "/", "/docs"],
)
def test_every_get_route_answers_head(client, path):
    got, headed = client.get(path), client.head(path)
    assert headed.status_code == got.status_code
    assert headed.content == b""
    assert headed.headers["content-type"] == got.headers["content-type"]
    if path != "/metrics":  # its counts change between the two requests
        assert headed.headers["content-length"] == got.headers["content-length"]


def test_head_on_a_post_route_is_405_and_says_head(client):
    r = client.head("/v1/search")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = client.request("PUT", "/v1/search")
    assert r.status_code == 405 and "PUT is not allowed" in r.json()["detail"]


# --- 6. the read key guards /metrics ------------------------------------------------------------


def test_metrics_needs_the_key_when_reads_do(tiny_index, tmp_path):
    with keyed_client(tiny_index, tmp_path, read_key_required=True) as c:
        assert c.get("/metrics").status_code == 401
        assert c.head("/metrics").status_code == 401
        assert c.get("/metrics", headers={"X-API-Key": "s3cret"}).status_code == 200
        for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
            assert c.get(path).status_code == 200, path
    with keyed_client(tiny_index, tmp_path) as c:  # a key for writes only: reads stay open
        assert c.get("/metrics").status_code == 200


# --- 8. offline docs ----------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_every_asset_from_the_app(client, page):
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", r.text)
    refs += re.findall(r"""url\(\s*["']?([^"')]+)""", r.text)
    assert any(ref.endswith(".js") for ref in refs), refs
    for ref in refs:
        assert not re.match(r"^([a-z]+:)?//", ref, re.I), f"{page} loads {ref} from another host"
        asset = client.get(ref)
        assert asset.status_code == 200 and asset.content, ref
    assert "cdn" not in r.text.lower() and "googleapis" not in r.text.lower()


# --- 9. the Content-Type hint -------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_json_without_its_content_type_gets_a_422_that_names_the_header(client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post("/v1/search", content=b'{"query": "topic"}', headers=headers)
    assert r.status_code == 422, r.text
    assert "Content-Type: application/json" in r.json()["detail"]
    r = client.post("/v1/documents", content=b'{"documents": []}', headers=headers)
    assert r.status_code == 422 and "Content-Type: application/json" in r.json()["detail"]


def test_json_with_its_content_type_gets_no_header_hint(client):
    r = client.post("/v1/search", content=b'["query"]', headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "Content-Type" not in r.json()["detail"]


# --- 10. quiet third-party loggers --------------------------------------------------------------


def test_setup_logging_quiets_faiss_loader_and_bm25s():
    code = """
import logging
from nci.cli import setup_logging
setup_logging()
print(*(logging.getLogger(name).getEffectiveLevel() for name in ("faiss.loader", "bm25s")))
import faiss, bm25s  # imported after the setup, as the commands do
logging.getLogger("bm25s").debug("a bm25s debug line")
logging.getLogger("bm25s").info("a bm25s info line")
logging.getLogger("bm25s").warning("a bm25s warning")
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert all(int(level) >= logging.WARNING for level in out.stdout.split()), out.stdout
    # faiss logs its loader's attempts at INFO on import; bm25s sets its own logger to DEBUG on
    # import: neither reaches the log below WARNING
    assert "faiss.loader" not in out.stderr, out.stderr
    assert "bm25s debug" not in out.stderr and "bm25s info" not in out.stderr, out.stderr
    assert "WARNING bm25s: a bm25s warning" in out.stderr
