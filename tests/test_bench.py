"""The benchmark on the synthetic index with a tiny random NCI model, the NCI retriever, and the
reference (Python trie) decoder that the decoding speed ratio is measured against."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import validation_copy
from tiny_index import save_tiny_model

from nci.bench import BenchConfig, PythonTrie, rankings_agree, reference_beam_search, run_bench
from nci.decoding import TrieTensors, beam_search
from nci.index import build_index
from nci.retrieval import ensemble, load_index, rank_vote
from nci.semantic_ids import END, IdsConfig, build, digit_to_token

METHOD_KEYS = {
    "success@1",
    "success@10",
    "success@100",
    "mrr@100",
    "ndcg@10",
    "qps_b1",
    "qps_b64",
    "p50_ms",
    "p99_ms",
}
SPEED_KEYS = {
    "decode_vs_generate_beam10",
    "decode_vs_generate_beam100",
    "nci_vs_dense_qps_b1",
    "nci_vs_dense_qps_b64",
}


@pytest.fixture(scope="module")
def pipeline(tiny_encoder, synthetic_data, synthetic_embeddings, plain_index, tmp_path_factory):
    """Synthetic data -> embeddings -> ids -> a tiny untrained NCI model -> two indexes."""
    root = tmp_path_factory.mktemp("bench")
    ids = build(synthetic_embeddings, root / "ids", IdsConfig(k=4, leaf_size=3))
    save_tiny_model(ids, tiny_encoder, root / "model")
    (root / "model" / "cache").mkdir()  # training leftovers stay out of the index
    np.save(root / "model" / "cache" / "states.npy", np.zeros(10))
    emb = synthetic_embeddings
    full = build_index(synthetic_data, emb, root / "index", ids=root / "ids", model=root / "model")
    dev = validation_copy(synthetic_data, root / "dev-data")
    fused = build_index(
        synthetic_data, emb, root / "fused", ids=root / "ids", model=root / "model", fusion=dev
    )
    return {
        "data": synthetic_data,
        "index": full,
        "fused": fused,
        "plain": plain_index,
        "ids": ids,
        "root": root,
    }


def test_index_with_a_model_offers_nci_and_shares_the_encoder(pipeline):
    index = load_index(pipeline["index"])
    methods = index.methods()
    assert methods.pop("fusion").startswith("not fitted")  # built without --fusion
    assert methods == dict.fromkeys(
        ("nci", "dense", "pq", "bm25", "dense-sentences", "bm25-sentences", "bm25-expanded", "nci+dense")
    )
    # the untrained model keeps the embedding encoder's weights, so the index stores it once
    assert index.manifest["query_encoder"]["path"] == "model/encoder"
    assert not (pipeline["index"] / "encoder").exists()
    assert set(index.manifest["inputs"]) == {"data", "embeddings", "ids", "model"}
    assert not (pipeline["index"] / "model" / "cache").exists()
    assert (pipeline["index"] / "model" / "model.safetensors").is_file()


def test_python_trie_allows_exactly_the_existing_ids(pipeline):
    ids = pipeline["ids"]
    ptrie = PythonTrie(ids.trie, ids.k)
    for doc_index, digits in enumerate(ids.ids):
        prefix = []
        for t, d in enumerate(digits):
            assert digit_to_token(t, d, ids.k) in ptrie.allowed(prefix)
            prefix.append(digit_to_token(t, d, ids.k))
        assert ptrie.allowed(prefix) == [END]  # a leaf: only END
        assert ptrie.node(prefix + [END, END]).doc == doc_index
    first = {digit_to_token(0, d[0], ids.k) for d in ids.ids}
    assert sorted(ptrie.allowed([])) == sorted(first)


@pytest.mark.parametrize("beam", [5, 100])
def test_reference_decoder_ranks_exactly_like_beam_search(pipeline, beam):
    """beam 100 > 60 documents: the search runs out of candidates and pads with -1."""
    index = load_index(pipeline["index"])
    model, ids = index.nci_model(), pipeline["ids"]
    batch = model.tokenize(["kalo mine", "topic 2 ruta vo", "zi", "a query about nothing in particular"])
    memory, mask = model.encode(batch["input_ids"], batch["attention_mask"])
    fast_docs, fast_scores = beam_search(model, memory, mask, TrieTensors.from_trie(ids.trie), beam=beam)
    ref_docs, ref_scores = reference_beam_search(
        model, memory, mask, PythonTrie(ids.trie, ids.k), beam, ids.trie.max_depth
    )
    assert ref_docs.shape == fast_docs.shape == (4, beam)
    agree, differ = rankings_agree(
        fast_docs.numpy(), fast_scores.numpy(), ref_docs.numpy(), ref_scores.numpy()
    )
    assert agree, differ
    np.testing.assert_allclose(ref_scores.numpy(), fast_scores.numpy(), atol=1e-5)
    found = ref_docs[ref_docs >= 0]
    assert ((found >= 0) & (found < 60)).all()
    if beam >= 60:
        assert all(sorted(row[row >= 0].tolist()) == list(range(60)) for row in ref_docs)


def test_rankings_agree_tolerates_ties_only():
    scores = np.array([[-1.0, -2.0, -2.0, -np.inf]])
    same = np.array([[3, 1, 2, -1]])
    assert rankings_agree(same, scores, np.array([[3, 2, 1, -1]]), scores) == (True, 0)
    assert rankings_agree(same, scores, np.array([[1, 3, 2, -1]]), scores) == (False, 1)
    assert rankings_agree(same, scores, same, scores + 0.1) == (False, 1)


def test_nci_retriever_batched_equals_one_by_one(pipeline):
    index = load_index(pipeline["index"])
    nci = index.retriever("nci", beam=6)
    queries = ["kalo mine", "topic 2 ruta vo", "zi"]
    batched = nci.search(queries, 4)
    single = [nci.search([q], 4)[0] for q in queries]
    assert [[d for d, *_ in h] for h in batched] == [[d for d, *_ in h] for h in single]
    for hits in batched:
        assert len(hits) == 4 and all(d in index.documents for d, *_ in hits)
        assert [s for _, s, *_ in hits] == sorted((s for _, s, *_ in hits), reverse=True)
    assert len(nci.search(["x"], 100)[0]) == 6  # at most beam results


def test_nci_plus_dense_rescores_the_nci_beam_with_cosine_similarity(pipeline):
    index = load_index(pipeline["index"])
    queries = ["kalo mine", "topic 2 ruta vo", "zi"]
    nci = index.retriever("nci", beam=6).search(queries, 6)
    hybrid = index.retriever("nci+dense", beam=6, weight=5.0)
    plain = index.retriever("nci+dense", beam=6, weight=0.0)
    vectors = index.query_encoder.encode(queries)
    row = {d: i for i, d in enumerate(index.doc_ids)}
    for q, beam_hits, hits, zero in zip(
        vectors, nci, hybrid.search(queries, 4), plain.search(queries, 6), strict=True
    ):
        expected = sorted(
            ((d, s + 5.0 * float(index.embeddings[row[d]] @ q)) for d, s, _ in beam_hits), key=lambda h: -h[1]
        )[:4]
        assert [d for d, *_ in hits] == [d for d, *_ in expected]
        np.testing.assert_allclose([s for _, s, *_ in hits], [s for _, s, *_ in expected], rtol=1e-5)
        assert [d for d, *_ in zero] == [d for d, *_ in beam_hits]  # weight 0: NCI's own order
    assert hybrid.search([], 4) == []


def test_rank_vote_adds_one_over_rank_fifth_plus_one():
    fused = rank_vote([[("a", -0.1), ("b", -0.2)], [("b", -0.3), ("c", -0.4)]], k=10)
    assert [d for d, *_ in fused] == ["b", "a", "c"]
    np.testing.assert_allclose([v for _, v, *_ in fused], [1 / 1.4 + 1 / 1.2, 1 / 1.2, 1 / 1.4])
    assert [h[:2] for h in rank_vote([[("a", 0.0), ("b", 0.0)]], k=1)] == [("a", pytest.approx(1 / 1.2))]


def test_an_ensemble_of_one_model_twice_keeps_its_ranking(pipeline, capsys):
    index = load_index(pipeline["index"])
    queries = ["kalo mine", "topic 2 ruta vo", "zi"]
    single = index.retriever("nci", beam=6).search(queries, 6)
    fused = ensemble([index, load_index(pipeline["index"])], beam=6).search(queries, 6)
    assert [[d for d, *_ in h] for h in fused] == [[d for d, *_ in h] for h in single]
    with pytest.raises(ValueError, match="at least two"):
        ensemble([index])
    from nci.evaluate import main as evaluate_main

    args = ["--data", str(pipeline["data"]), "--index", str(pipeline["index"]), "--method", "nci"]
    assert evaluate_main([*args, "--k", "10", "--ensemble", str(pipeline["index"])]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "nci-ensemble2-beam10"
    with pytest.raises(SystemExit):
        evaluate_main([*args[:-1], "dense", "--ensemble", str(pipeline["index"])])
    from nci.search import main as search_main

    search = ["--index", str(pipeline["index"]), "--method", "nci", "--k", "3", "--beam", "6", "--json"]
    assert search_main([*search, "--ensemble", str(pipeline["index"]), "--", "kalo mine"]) == 0
    hits = json.loads(capsys.readouterr().out)["results"]
    assert [h["id"] for h in hits] == [d for d, *_ in single[0][:3]]


def _check_outputs(out, methods):
    report = json.loads((out / "results.json").read_text())
    assert set(report["methods"]) == methods
    assert SPEED_KEYS <= set(report["speed"])
    assert (out / "recall_vs_qps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    assert all(f"| {m} |" in md for m in methods)
    return report


def test_bench_runs_every_method_and_writes_the_three_files(pipeline, tmp_path):
    config = BenchConfig(
        beams=(10, 3), latency_queries=5, decode_beams=(10, 100), decode_queries=6, threads=1, isolate=False
    )
    out = tmp_path / "bench"
    report = run_bench(pipeline["data"], pipeline["fused"], out, config)
    _check_outputs(
        out,
        {"nci", "nci-beam3", "dense", "pq", "bm25", "nci+dense", "fusion"}
        | {"dense-sentences", "bm25-sentences", "bm25-expanded"},
    )
    for key, r in report["methods"].items():
        assert METHOD_KEYS <= set(r), key
        assert 0 <= r["success@1"] <= r["success@10"] <= r["success@100"] <= 1
        assert r["qps_b64"] > 0 and r["qps_b1"] > 0 and r["p50_ms"] <= r["p99_ms"]
        assert r["index_bytes"] > 0
        assert len((out / "runs" / f"{key}.trec").read_text().split("\n")[0].split()) == 6
    # a beam-3 search returns 3 documents: nothing more is found at 10 or 100
    beam3 = report["methods"]["nci-beam3"]
    assert beam3["success@100"] == beam3["success@10"]
    speed = report["speed"]
    assert all(speed[k] > 0 for k in SPEED_KEYS)
    assert speed["decode"]["beam10"]["identical"] and speed["decode"]["beam100"]["identical"]
    assert speed["nci_vs_dense_qps_b64"] == pytest.approx(
        report["methods"]["nci"]["qps_b64"] / report["methods"]["dense"]["qps_b64"]
    )
    assert report["queries"] == sum(
        1 for line in (out / "runs" / "bm25.trec").read_text().splitlines() if line.split()[3] == "1"
    )  # every query answered
    # BM25 finds synthetic queries' documents (their own words) far better than chance (1/60)
    assert report["methods"]["bm25"]["success@10"] > 0.5


def test_bench_without_a_model_skips_nci_with_a_note(pipeline, tmp_path):
    config = BenchConfig(
        methods=("nci", "dense", "bm25"), latency_queries=3, max_queries=10, threads=1, isolate=False
    )
    report = run_bench(pipeline["data"], pipeline["plain"], tmp_path / "b", config)
    _check_outputs(tmp_path / "b", {"nci", "dense", "bm25"})
    assert report["queries"] == 10
    assert "without --ids and --model" in report["methods"]["nci"]["skipped"]
    assert report["speed"]["nci_vs_dense_qps_b1"] is None
    assert any("nci: skipped" in n for n in report["notes"])


def test_bench_isolates_each_method_in_a_fresh_process(pipeline, tmp_path):
    config = BenchConfig(methods=("bm25",), latency_queries=3, max_queries=8, threads=1)
    report = run_bench(pipeline["data"], pipeline["plain"], tmp_path / "b", config)
    r = report["methods"]["bm25"]
    assert r["peak_rss_mb"] > 0 and 0 <= r["added_rss_mb"] <= r["peak_rss_mb"]


def test_bench_ids_dispatches_to_semantic_ids(monkeypatch):
    import nci.bench
    import nci.semantic_ids

    seen = {}
    monkeypatch.setattr(
        nci.semantic_ids, "bench_main", lambda argv, prog: seen.update(argv=argv, prog=prog) or 0
    )
    assert nci.bench.main(["ids", "--n", "5"], prog="nci bench") == 0
    assert seen == {"argv": ["--n", "5"], "prog": "nci bench ids"}
