"""The method registry: a method declared once (here, in this file alone) is offered by
``nci search``, accepted by the API and measured by ``nci bench``; options are checked against
its declaration."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from nci.retrieval import Hit, Method, Option, get_method, method_names, register, unregister


@dataclass
class ShortestFirst:
    """A toy method: documents ranked by text length, shortest first (score = -length)."""

    name: str
    corpus: object

    def search(self, queries: list[str], k: int, offset: int = 0) -> list[list[Hit]]:
        store = self.corpus.store
        ranked = sorted(store, key=lambda d: (len(store[d]["text"]), d))[offset : offset + k]
        return [[Hit(d, -float(len(store[d]["text"])), self.name) for d in ranked] for _ in queries]


@pytest.fixture
def toy():
    method = register(
        Method(
            name="shortest",
            summary="documents by length, shortest first",
            load=lambda ctx: ShortestFirst("shortest", ctx.corpus),
            options=(Option("offset", int, 0, "skip this many documents", 0),),
        )
    )
    yield method
    unregister(method.name)


def expected(index_dir, k, offset=0):
    from nci.retrieval import load_index

    docs = load_index(index_dir).documents
    return sorted(docs, key=lambda d: (len(docs[d]["text"]), d))[offset : offset + k]


def test_a_registered_method_is_in_search_the_api_and_bench(
    toy, tiny_index, synthetic_data, tmp_path, capsys
):
    from nci import search
    from nci.bench import BenchConfig, run_bench
    from service.app import create_app
    from service.config import Settings

    assert "shortest" in method_names()
    # nci search: a choice, and it runs with its option
    argv = ["--index", str(tiny_index), "--method", "shortest", "--k", "3", "--json", "any query"]
    assert search.main([*argv[:6], "--option", "offset=2", *argv[6:]]) == 0
    got = [h["id"] for h in json.loads(capsys.readouterr().out)["results"]]
    assert got == expected(tiny_index, 3, offset=2)
    with pytest.raises(SystemExit):
        search.main([*argv[:6], "--option", "nope=1", *argv[6:]])

    # the API: in the schema's method enum, listed by /v1/index, and searchable
    settings = Settings(index=tiny_index, updates_dir=tmp_path / "updates")
    with TestClient(create_app(settings)) as client:
        schema = client.get("/openapi.json").json()["components"]["schemas"]["SearchRequest"]
        assert "shortest" in schema["properties"]["method"]["enum"]
        info = client.get("/v1/index").json()
        assert info["methods"]["shortest"] is None and "offset" in info["options"]["shortest"]
        body = {"query": "q", "k": 4, "method": "shortest", "options": {"offset": 1}}
        r = client.post("/v1/search", json=body)
        assert r.status_code == 200, r.text
        assert [h["id"] for h in r.json()["results"]] == expected(tiny_index, 4, offset=1)
        bad = client.post("/v1/search", json={**body, "options": {"offset": -1}})
        assert bad.status_code == 422 and "offset" in bad.json()["detail"]

    # nci bench: measured beside the other methods, in one run
    config = BenchConfig(
        methods=("bm25", "shortest"),
        latency_queries=3,
        decode_beams=(),
        max_queries=8,
        isolate=False,
        threads=1,
    )
    report = run_bench(synthetic_data, tiny_index, tmp_path / "bench", config)
    assert {"bm25", "shortest"} <= set(report["methods"])
    assert report["methods"]["shortest"]["qps_b64"] > 0


def test_options_are_checked_against_the_declaration():
    nci = get_method("nci")
    assert nci.parse_options({"beam": 5}) == {"beam": 5} and nci.parse_options({"beam": None}) == {}
    with pytest.raises(ValueError, match="no option 'rerank'"):
        nci.parse_options({"rerank": 2})
    with pytest.raises(ValueError, match="must be >= 1"):
        nci.parse_options({"beam": 0})
    with pytest.raises(ValueError, match="must be an integer"):
        get_method("pq").parse_options({"rerank": 1.5})
    with pytest.raises(ValueError, match="unknown method 'colbert'"):
        get_method("colbert")


def test_the_default_beam_rule_is_one_rule():
    from nci.retrieval import DEFAULT_BEAM, resolve_beam

    assert resolve_beam(3) == DEFAULT_BEAM == 10
    assert resolve_beam(25) == 25 and resolve_beam(25, beam=4) == 4
    with pytest.raises(ValueError):
        resolve_beam(5, beam=0)
