"""The HTTP service: search with every method, documents, protection, bad input, health and
metrics, batching, start-up checks, and a property-based run against its own OpenAPI schema."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

try:
    import schemathesis
except ImportError:  # an optional test dependency: the property-based test is skipped without it
    schemathesis = None

from nci.live import open_live_index
from nci.retrieval import load_index
from service.app import create_app
from service.batching import Batcher
from service.config import Settings

METHODS = (
    "nci",
    "dense",
    "pq",
    "bm25",
    "dense-sentences",
    "bm25-sentences",
    "bm25-expanded",
    "nci+dense",
    "fusion",
)


@pytest.fixture(scope="module")
def index_dir(tiny_index) -> Path:
    return tiny_index


@pytest.fixture(scope="module")
def reader(index_dir, tmp_path_factory):
    """One client for tests that only read (its updates directory stays empty)."""
    settings = Settings(index=index_dir, updates_dir=tmp_path_factory.mktemp("reader-updates"))
    with TestClient(create_app(settings)) as client:
        yield client


def make_client(index_dir: Path, tmp_path: Path, **settings) -> TestClient:
    return TestClient(create_app(Settings(index=index_dir, updates_dir=tmp_path / "updates", **settings)))


@pytest.fixture
def writer(index_dir, tmp_path):
    with make_client(index_dir, tmp_path) as client:
        yield client


# --- search ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_search_each_method(reader, method):
    r = reader.post("/v1/search", json={"query": "topic 2 kalo", "k": 5, "method": method})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == method and body["k"] == 5 and body["took_ms"] > 0
    assert 1 <= len(body["results"]) <= 5
    for hit in body["results"]:
        assert hit["title"].startswith("topic") and hit["snippet"] and hit["source"] == method
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert (body.get("beam") is not None) == (method in {"nci", "nci+dense", "fusion"})  # those with a beam


def test_service_returns_what_the_library_returns(reader, index_dir):
    index = load_index(index_dir)
    queries = ["topic 1 mine", "ruta kalo", "topic 4"]
    for method in ("dense", "bm25", "nci", "nci+dense"):
        opts = {"beam": 10} if method.startswith("nci") else {}
        expected = index.retriever(method, **opts).search(queries, 10)
        r = reader.post("/v1/search", json={"queries": queries, "k": 10, "method": method, "beam": 10})
        got = [[h["id"] for h in q["results"]] for q in r.json()["batch"]]
        assert [q["query"] for q in r.json()["batch"]] == queries
        assert got == [[d for d, *_ in hits] for hits in expected], method


def test_nci_beam_bounds_the_results(reader):
    r = reader.post("/v1/search", json={"query": "topic", "k": 50, "method": "nci", "beam": 3})
    assert r.json()["beam"] == 3 and len(r.json()["results"]) == 3


def test_unavailable_method_is_a_clear_400(plain_index, tmp_path):
    with make_client(plain_index, tmp_path) as client:
        r = client.post("/v1/search", json={"query": "topic", "method": "nci"})
        assert r.status_code == 400
        assert "not available" in r.json()["detail"] and "dense" in r.json()["detail"]
        assert client.post("/v1/search", json={"query": "topic", "method": "dense"}).status_code == 200


def test_concurrent_searches_are_batched_and_equal_one_by_one():
    calls: list[list[str]] = []

    def search(queries, k, beam):
        calls.append(list(queries))
        return [[(q, float(i)) for i in range(k)] for q in queries]

    async def run():
        batcher = Batcher("t", search, window=0.05, max_queries=64)
        results = await asyncio.gather(*(batcher.submit([f"q{i}"], k=1 + i % 3) for i in range(20)))
        await batcher.stop()
        return results

    results = asyncio.run(run())
    assert results == [[[(f"q{i}", float(j)) for j in range(1 + i % 3)]] for i in range(20)]
    assert len(calls) < 20 and sum(map(len, calls)) == 20  # fewer, larger calls


def test_batcher_splits_by_options_and_passes_errors():
    def search(queries, k, options):
        if "bad" in queries:
            raise ValueError("boom")
        return [[(q, float(options["beam"]))] for q in queries]

    async def run():
        batcher = Batcher("t", search, window=0.05)
        out = await asyncio.gather(
            batcher.submit(["a"], 1, {"beam": 5}),
            batcher.submit(["b"], 1, {"beam": 7}),
            batcher.submit(["bad"], 1, {"beam": 9}),
            return_exceptions=True,
        )
        await batcher.stop()
        return out

    a, b, bad = asyncio.run(run())
    assert a == [[("a", 5.0)]] and b == [[("b", 7.0)]] and isinstance(bad, ValueError)


# --- documents -------------------------------------------------------------------------------


def test_documents_get_add_delete(writer):
    r = writer.get("/v1/documents/d5")
    assert r.status_code == 200 and r.json()["trained"] and r.json()["semantic_id"]
    assert writer.get("/v1/documents/nope").status_code == 404

    new = {"_id": "n-1", "title": "Qwertyuiop", "text": "zzyzx appears in this single document"}
    r = writer.post("/v1/documents", json={"documents": [new, {"_id": "n-2", "text": "another"}]})
    assert r.status_code == 201, r.text
    assert [a["id"] for a in r.json()["added"]] == ["n-1", "n-2"] and r.json()["documents"] == 62
    assert writer.get("/v1/documents/n-1").json()["title"] == "Qwertyuiop"
    for method in METHODS:
        r = writer.post(
            "/v1/search",
            json={
                "query": "Qwertyuiop. zzyzx appears in this single document",
                "k": 62,
                "method": method,
                "beam": 62,
            },
        )
        ids = [h["id"] for h in r.json()["results"]]
        assert "n-1" in ids, method
    bm25 = writer.post("/v1/search", json={"query": "zzyzx", "method": "bm25"}).json()["results"]
    assert bm25[0]["id"] == "n-1"

    assert writer.post("/v1/documents", json={"documents": [new]}).status_code == 409
    r = writer.delete("/v1/documents/n-1")
    assert r.status_code == 200 and r.json() == {"deleted": "n-1", "documents": 61}
    assert writer.delete("/v1/documents/n-1").status_code == 404
    assert writer.get("/v1/documents/n-1").status_code == 404
    writer.delete("/v1/documents/d5")
    for method in METHODS:
        r = writer.post("/v1/search", json={"query": "topic", "k": 100, "method": method, "beam": 100})
        assert not {"n-1", "d5"} & {h["id"] for h in r.json()["results"]}, method


def test_updates_survive_a_restart_of_the_service(index_dir, tmp_path):
    with make_client(index_dir, tmp_path) as client:
        client.post("/v1/documents", json={"documents": [{"_id": "kept", "text": "still here later"}]})
        client.delete("/v1/documents/d9")
    with make_client(index_dir, tmp_path) as client:
        assert client.get("/v1/documents/kept").status_code == 200
        assert client.get("/v1/documents/d9").status_code == 404
        assert client.get("/v1/index").json()["added"] == 1


# --- protection ------------------------------------------------------------------------------


def test_api_key_guards_writes_and_optionally_reads(index_dir, tmp_path):
    with make_client(index_dir, tmp_path, api_key="s3cret") as client:
        doc = {"documents": [{"_id": "k-1", "text": "key test"}]}
        assert client.post("/v1/documents", json=doc).status_code == 401
        r = client.post("/v1/documents", json=doc, headers={"X-API-Key": "wrong"})
        assert r.status_code == 401 and "wrong API key" in r.json()["detail"]
        assert client.post("/v1/documents", json=doc, headers={"X-API-Key": "s3cret"}).status_code == 201
        assert client.delete("/v1/documents/k-1").status_code == 401
        assert client.post("/v1/search", json={"query": "key test"}).status_code == 200  # reads stay open
    with make_client(index_dir, tmp_path, api_key="s3cret", read_key_required=True) as client:
        assert client.post("/v1/search", json={"query": "key test"}).status_code == 401
        assert client.get("/v1/documents/d1").status_code == 401
        assert client.get("/v1/documents/d1", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/healthz").status_code == 200  # probes never need a key


def test_limits(index_dir, tmp_path):
    with make_client(
        index_dir, tmp_path, max_query_chars=20, max_batch=3, max_beam=8, max_body_bytes=4096, max_documents=2
    ) as client:

        def search(**body):
            return client.post("/v1/search", json={"query": "topic", **body})

        assert client.post("/v1/search", json={"query": "x" * 21}).status_code == 422
        r = client.post("/v1/search", json={"queries": ["a", "b", "c", "d"]})
        assert r.status_code == 422 and "limit is 3" in r.json()["detail"]
        assert search(k=1001).status_code == 422 and search(k=0).status_code == 422
        assert search(k=1000, method="bm25").status_code == 200
        assert search(beam=9).status_code == 422 and search(beam=8).status_code == 200
        r = client.post("/v1/documents", json={"documents": [{"_id": "big", "text": "x" * 5000}]})
        assert r.status_code == 413 and "4096 bytes" in r.json()["detail"]
        docs = [{"_id": f"m{i}", "text": "t"} for i in range(3)]
        assert client.post("/v1/documents", json={"documents": docs}).status_code == 413


def test_cors_is_off_unless_configured(index_dir, tmp_path, reader):
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    r = reader.options("/v1/search", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    with make_client(index_dir, tmp_path, cors_origins=["https://example.org"]) as client:
        r = client.options("/v1/search", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "https://example.org"


BAD_SEARCHES = [
    (b'{"query": ""}', "empty"),
    (b'{"query": "   \\t"}', "whitespace"),
    (b'{"query": "' + b"x" * 1001 + b'"}', "limit is 1000"),
    (b'{"query": 5}', "valid string"),
    (b'{"query": "x", "k": "ten"}', "k:"),
    (b'{"query": "x", "k": 1.5}', "k:"),
    (b'{"query": "x", "method": "colbert"}', "method:"),
    (b'{"query": "x", "beam": -1}', "beam:"),
    (b'{"query": "x", "queries": ["y"]}', "exactly one"),
    (b"{}", "exactly one"),
    (b'{"queries": []}', "empty list"),
    (b'{"queries": ["ok", " "]}', "queries[1]"),
    (b'{"query": "x", "extra": 1}', "extra"),
    (b'{"query": "\\udcff"}', "surrogate"),
    (b'{"query": "x"', "malformed JSON"),
    (b"not json at all", "malformed JSON"),
    (b'["query"]', "dictionary"),
    (b"", "missing request body"),
    (b'{"query": "caf\xe9"}', "not valid UTF-8"),
    (b"\xff\xfe\x00\x00", "not valid UTF-8"),
]


@pytest.mark.parametrize("body,message", BAD_SEARCHES, ids=range(len(BAD_SEARCHES)))
def test_bad_search_input_is_a_4xx_that_says_what_to_fix(reader, body, message):
    r = reader.post("/v1/search", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert message in r.json()["detail"]


@pytest.mark.parametrize(
    "body,message",
    [
        ({"documents": []}, "at least 1"),
        ({"documents": [{"_id": "has space", "text": "t"}]}, "whitespace"),
        ({"documents": [{"_id": "", "text": "t"}]}, "at least 1 character"),
        ({"documents": [{"_id": "a", "text": "  "}]}, "text"),
        ({"documents": [{"_id": "a"}]}, "text: Field required"),
        ({"documents": [{"_id": "a", "text": "t"}, {"_id": "a", "text": "u"}]}, "twice"),
        ({"documents": [{"_id": "d1", "text": "t"}]}, "exists"),
        ({"documents": "nope"}, "valid list"),
    ],
)
def test_bad_documents_are_4xx(writer, body, message):
    r = writer.post("/v1/documents", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert message in r.json()["detail"]


def test_unknown_ids_and_routes_are_404(reader):
    for path in ("/v1/documents/%FF%FE", "/v1/documents/no%20such", "/v2/search", "/v1/documents/"):
        r = reader.get(path)
        assert r.status_code == 404 and r.json()["detail"], path
    assert reader.put("/v1/search", json={}).status_code == 405


# --- health, metrics, schema -------------------------------------------------------------------


def test_health_readiness_metrics_and_openapi(reader):
    assert reader.get("/healthz").json() == {"status": "ok"}
    assert reader.get("/readyz").json() == {"status": "ready", "journal": 0}
    for method in METHODS:
        reader.post("/v1/search", json={"query": "metrics", "method": method})
    text = reader.get("/metrics").text
    assert reader.get("/metrics").headers["content-type"].startswith("text/plain")
    for method in METHODS:
        assert f'nci_search_latency_seconds_bucket{{le="0.5",method="{method}"}}' in text
        assert f'nci_search_requests_total{{method="{method}"}}' in text
    assert 'nci_http_requests_total{route="/v1/search",status="200",verb="POST"}' in text
    assert "nci_index_documents 60.0" in text and 'nci_index_bytes{method="nci"}' in text
    schema = reader.get("/openapi.json").json()
    assert {
        "/v1/search",
        "/v1/documents",
        "/v1/documents/{doc_id}",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= set(schema["paths"])
    assert reader.get("/v1/index").json()["methods"] == dict.fromkeys(METHODS)


# --- start-up --------------------------------------------------------------------------------


def test_corrupt_or_incomplete_index_fails_at_start(index_dir, tmp_path, capsys):
    from nci.manifest import ArtifactError
    from service.main import main

    broken = tmp_path / "broken"
    shutil.copytree(index_dir, broken)
    with open(broken / "dense.faiss", "r+b") as f:
        f.truncate(100)
    with pytest.raises(SystemExit) as exit_:
        main(["--index", str(broken)], prog="nci serve")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "dense.faiss" in err and "truncated" in err and "nci index build" in err

    (broken / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest.json: missing"):
        with TestClient(create_app(Settings(index=broken))):
            pass

    with pytest.raises(SystemExit) as exit_:
        main(["--index", str(tmp_path / "nowhere")], prog="nci serve")
    assert exit_.value.code == 2 and "no such index directory" in capsys.readouterr().err


def test_serving_imports_no_training_code(index_dir, tmp_path):
    code = f"""
import sys, json
from fastapi.testclient import TestClient

try:
    import schemathesis
except ImportError:  # an optional test dependency: the property-based test is skipped without it
    schemathesis = None
from service.app import create_app
from service.config import Settings
with TestClient(create_app(Settings(index={str(index_dir)!r}, updates_dir={str(tmp_path / "u")!r}))) as c:
    assert c.post("/v1/search", json={{"query": "topic", "method": "nci"}}).status_code == 200
    c.post("/v1/documents", json={{"documents": [{{"_id": "x", "text": "y"}}]}})
print(json.dumps(sorted(m for m in sys.modules if m.startswith("nci"))))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    modules = set(json.loads(out.stdout.splitlines()[-1]))
    assert "nci.model" in modules  # it did run NCI
    assert not modules & {"nci.train", "nci.querygen", "nci.doc2query", "nci.features", "nci.bench"}


@pytest.fixture(scope="module")
def api_schema(index_dir, tmp_path_factory):
    if schemathesis is None:
        pytest.skip("schemathesis is not installed; pip install -e '.[test]'")
    """The app's own OpenAPI schema, for schemathesis (requests go to the app in-process)."""
    live = open_live_index(index_dir, tmp_path_factory.mktemp("schemathesis-updates"))
    app = create_app(Settings(index=index_dir, max_beam=50), live=live)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    live.close()


@pytest.mark.slow
def test_openapi_property_based_run_finds_no_server_error(api_schema):
    """Requests generated from the app's own schema, valid and not (30 per operation, any mix of
    types, lengths and missing fields): none may get a 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation.modes import GenerationMode

    failures, statuses = [], []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 7
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(mode))
            def check(case):
                response = case.call()
                statuses.append(response.status_code)
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path} {case.body!r}: "
                        f"{response.status_code} {response.text[:200]}"
                    )

            try:
                check()
            except Unsatisfiable:  # no invalid input exists for an operation without parameters
                assert (
                    mode == GenerationMode.NEGATIVE and not operation.body and not operation.path_parameters
                )
    assert any(200 <= s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)
    assert not failures, "\n".join(failures[:10])


# --- real data -------------------------------------------------------------------------------


@pytest.mark.slow
def test_squad_index_serves_searches_updates_and_bad_input(tmp_path):
    """SQuAD v1.1 dev (2,067 paragraphs): MiniLM embeddings, k=10 ids and an untrained NCI model
    of the default size; the service answers every method, ranks sensibly, takes updates and
    rejects bad input with 4xx."""
    import torch

    from nci.data import load_qrels, prepare, split_queries
    from nci.embed import EmbedConfig, embed_corpus
    from nci.encoder import load_encoder
    from nci.index import build_index
    from nci.model import NCIConfig, NCIModel
    from nci.semantic_ids import IdsConfig, build
    from nci.settings import get_settings

    root = get_settings().datasets
    if root is None or not (root / "squad-v1.1-dev").exists():
        pytest.skip("needs NCI_DATASETS pointing at a folder with squad-v1.1-dev/")
    data = tmp_path / "squad"
    prepare("squad", data, src=root / "squad-v1.1-dev")
    emb = embed_corpus(data, tmp_path / "emb", EmbedConfig(max_length=128, batch_size=64))
    ids = build(emb, tmp_path / "ids", IdsConfig(k=10, leaf_size=10))
    tokenizer, encoder = load_encoder(None)
    torch.manual_seed(0)
    NCIModel(NCIConfig(k=10, max_depth=ids.max_depth), encoder, tokenizer).save_pretrained(tmp_path / "model")
    index = build_index(
        data, emb, tmp_path / "index", ids=tmp_path / "ids", model=tmp_path / "model", fusion=data
    )

    queries = split_queries(data, "test")
    qrels = load_qrels(data, "test")
    sample = list(queries)[:64]
    with make_client(index, tmp_path, api_key="k") as client:
        for method in METHODS:
            r = client.post(
                "/v1/search", json={"queries": [queries[q] for q in sample], "k": 10, "method": method}
            )
            assert r.status_code == 200, r.text
            batch = r.json()["batch"]
            found = sum(
                bool(set(qrels[q]) & {h["id"] for h in b["results"]})
                for q, b in zip(sample, batch, strict=True)
            )
            if not method.startswith("nci") and method != "fusion":  # the NCI model here is untrained
                assert found / len(sample) >= 0.8, method
        doc = {
            "_id": "live-1",
            "title": "Zorblatt Observatory",
            "text": "The Zorblatt Observatory was founded in 1921 by the astronomer Ilse Marwick.",
        }
        assert client.post("/v1/documents", json={"documents": [doc]}).status_code == 401
        r = client.post("/v1/documents", json={"documents": [doc]}, headers={"X-API-Key": "k"})
        assert r.status_code == 201 and r.json()["added"][0]["semantic_id"].count("-") >= 1
        gone = next(iter(qrels[sample[0]]))
        assert client.delete(f"/v1/documents/{gone}", headers={"X-API-Key": "k"}).status_code == 200
        for method in METHODS:
            r = client.post(
                "/v1/search",
                json={
                    "queries": ["Who founded the Zorblatt Observatory?", queries[sample[0]]],
                    "k": 10,
                    "method": method,
                },
            )
            first, second = r.json()["batch"]
            assert "live-1" in [h["id"] for h in first["results"]], method
            assert gone not in [h["id"] for h in second["results"]], method
        for body in BAD_SEARCHES:
            r = client.post("/v1/search", content=body[0], headers={"Content-Type": "application/json"})
            assert 400 <= r.status_code < 500
