"""One retrieval path: the service, the library and ``nci search`` return the same rankings and
scores for every registered method, through live additions and deletions, and an index directory
is its base files plus its journal, whoever reads it."""

from __future__ import annotations

import json
import shutil

import pytest
from fastapi.testclient import TestClient

from nci import search
from nci.live import open_live_index
from nci.retrieval import get_method, load_index, method_names
from service.app import create_app
from service.config import Settings

QUERIES = ["topic 1 mine", "ruta kalo", "topic 4", "a brand new zebra document"]
K = 8

# (operation, argument): the sequence every method is checked through
STEPS = [
    ("add", [{"_id": "new-1", "title": "topic zebra", "text": "a brand new zebra document kalo"}]),
    ("delete", "d3"),
    ("add", [{"_id": "new-2", "text": "topic 4 ruta again"}, {"_id": "new-3", "text": "mine mine ruta"}]),
    ("delete", "new-1"),
    ("delete", "d17"),
    ("add", [{"_id": "d3", "title": "back", "text": "d3 returns as a new document about topic 1"}]),
]


@pytest.fixture
def index_copy(tiny_index, tmp_path):
    """A private copy of the tiny index, so the server may keep its journal inside it."""
    return shutil.copytree(tiny_index, tmp_path / "index")


def options_for(method: str) -> dict:
    names = {o.name for o in get_method(method).options}
    return {"beam": K} if "beam" in names else {}


def served(client: TestClient, method: str) -> list[list[tuple[str, float, str]]]:
    body = {"queries": QUERIES, "k": K, "method": method, "snippets": False}
    if options_for(method):
        body["beam"] = K
    r = client.post("/v1/search", json=body)
    assert r.status_code == 200, r.text
    return [[(h["id"], h["score"], h["source"]) for h in q["results"]] for q in r.json()["batch"]]


def library(index_dir, method: str) -> list[list[tuple[str, float, str]]]:
    live = open_live_index(index_dir, read_only=True)  # replays the server's journal, writes nothing
    results = live.search(method, QUERIES, K, **options_for(method))
    return [[(h.doc_id, h.score, h.source) for h in hits] for hits in results]


def test_service_library_and_cli_agree_through_updates(index_copy, capsys):
    methods = [m for m, why in load_index(index_copy).methods().items() if not why]
    assert set(methods) == set(method_names())  # the tiny index serves every registered method
    with TestClient(create_app(Settings(index=index_copy))) as client:
        last = {}
        for op, arg in STEPS:
            if op == "add":
                assert client.post("/v1/documents", json={"documents": arg}).status_code == 201
            else:
                assert client.delete(f"/v1/documents/{arg}").status_code == 200
            for method in methods:
                last[method] = served(client, method)
                assert last[method] == library(index_copy, method), (op, arg, method)
        assert any(src == "dense" for hits in last["nci"] for _, _, src in hits)  # fallback reached
    # the server stopped (its journal folded into a snapshot): `nci search` reads what it served
    for method in methods:
        argv = ["--index", str(index_copy), "--method", method, "--k", str(K), "--json", *QUERIES]
        if options_for(method):
            argv[4:4] = ["--beam", str(K)]
        assert search.main(argv) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        got = [[(h["id"], h["score"], h["source"]) for h in line["results"]] for line in lines]
        want = [[(d, round(s, 6), src) for d, s, src in hits] for hits in last[method]]
        assert got == want, method
        assert "d17" not in {d for hits in got for d, _, _ in hits} and "new-1" not in str(got)


def test_read_only_replay_writes_nothing(index_copy):
    with TestClient(create_app(Settings(index=index_copy))) as client:
        client.post("/v1/documents", json={"documents": STEPS[0][1]})
    db = index_copy / "updates" / "live.sqlite3"
    before = db.read_bytes()
    live = open_live_index(index_copy, read_only=True)
    assert "new-1" in live
    with pytest.raises(ValueError, match="read-only"):
        live.delete("new-1")
    live.close()
    # SQLite may make its shared-memory files beside the database; the database itself is as it was
    assert db.read_bytes() == before
