"""Dense, PQ and BM25 behind the retriever interface; index build, load and its errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nci.data import load_corpus, load_qrels, split_queries
from nci.embed import EmbedConfig, embed_corpus
from nci.index import IndexConfig, build_index
from nci.manifest import ArtifactError
from nci.retrieval import Retriever, load_index
from nci.retrieval.dense import FaissRetriever, build_faiss, default_pq_m
from nci.synthetic import make_corpus, make_vectors, write_beir


@pytest.fixture(scope="module")
def built(synthetic_data, synthetic_embeddings, plain_index):
    """(data, embeddings, index) directories for the synthetic corpus, without a model."""
    return synthetic_data, synthetic_embeddings, plain_index


def test_every_baseline_satisfies_the_interface(built):
    index = load_index(built[2])
    assert index.methods()["nci"] == "the index was built without --ids and --model"
    assert index.methods()["nci+dense"] == "needs nci"
    queries = ["kalo mine ruta", "zzz", "topic 3"]
    for method in ("dense", "pq", "bm25"):
        r = index.retriever(method)
        assert isinstance(r, Retriever)
        results = r.search(queries, 5)
        assert len(results) == len(queries)
        for hits in results:
            assert len(hits) <= 5
            assert all(doc_id in index.documents for doc_id, *_ in hits)
            scores = [s for _, s, *_ in hits]
            assert scores == sorted(scores, reverse=True)
        assert r.search([], 5) == []


def test_dense_equals_brute_force_numpy(built):
    index = load_index(built[2])
    dense = index.retriever("dense")
    queries = list(split_queries(built[0], "test").values())[:10]
    vecs = index.query_encoder.encode(queries)
    emb = np.load(built[1] / "embeddings.npy")
    doc_ids = (built[1] / "doc_ids.txt").read_text().split()
    for hits, v in zip(dense.search(queries, 7), vecs, strict=True):
        order = np.argsort(-(emb @ v), kind="stable")[:7]
        assert [d for d, *_ in hits] == [doc_ids[i] for i in order]
        np.testing.assert_allclose([s for _, s, *_ in hits], (emb @ v)[order], rtol=1e-5, atol=1e-6)


def test_pq_recall_close_to_exact_and_rerank_closes_the_gap():
    # queries are noisy copies of document vectors: each should find its own document
    x = make_vectors(1000, 64, n_clusters=30, seed=1)
    rng = np.random.default_rng(0)
    queries = x[:200] + 0.1 * rng.standard_normal((200, 64)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    flat, pq = build_faiss(x, default_pq_m(64))
    assert type(pq).__name__ == "IndexPQFastScan" and pq.pq.M == 16 and pq.pq.nbits == 4
    ids = [f"v{i}" for i in range(len(x))]

    def success(retriever, k):
        hits = retriever.search_vectors(queries, k)
        assert all(
            len(h) == k and len({d for d, *_ in h}) == k and all(d in ids for d, *_ in h) for h in hits
        )
        return np.mean([f"v{i}" in {d for d, *_ in h} for i, h in enumerate(hits)])

    exact = success(FaissRetriever("dense", flat, ids, encoder=None), 10)
    approx = success(FaissRetriever("pq", pq, ids, encoder=None), 10)
    rerank = FaissRetriever("pq", pq, ids, encoder=None, vector=lambda d: x[int(d[1:])])
    assert exact == 1.0
    assert 0.6 < approx <= exact
    # re-ranking 4x the candidates with exact vectors recovers the exact top hit almost always
    top1 = [h[0][0] for h in rerank.search_vectors(queries, 10, rerank=4)]
    assert np.mean([d == f"v{i}" for i, d in enumerate(top1)]) >= 0.95
    # asking for more than the index holds returns what there is
    assert len(FaissRetriever("pq", pq, ids, encoder=None).search_vectors(queries[:1], 5000)[0]) == 1000


def test_bm25_finds_a_document_from_its_own_words(built):
    index = load_index(built[2])
    bm25 = index.retriever("bm25")
    corpus = load_corpus(built[0])
    words = {d: set(f"{doc['title']} {doc['text']}".split()) for d, doc in corpus.items()}
    for doc_id in ("d7", "d30", "d59"):
        others = set().union(*(w for d, w in words.items() if d != doc_id))
        unique = sorted(words[doc_id] - others)
        assert unique, doc_id
        hits = bm25.search([" ".join(unique[:2])], 3)[0]
        assert hits[0][0] == doc_id and len(hits) == 1  # no other document shares those words
    assert bm25.search(["Zzzqx"], 3) == [[]]  # no shared term: no results, not random ones
    qrels = load_qrels(built[0], "test")
    queries = split_queries(built[0], "test")
    top1 = [bm25.search([queries[q]], 1)[0][0][0] for q in queries]
    hits = np.mean([d in qrels[q] for q, d in zip(queries, top1, strict=True)])
    assert hits > 0.8


def test_bm25_uses_an_english_stemmer(tmp_path, tiny_encoder):
    data = tmp_path / "data"
    (data / "qrels").mkdir(parents=True)
    docs = ["The runner was running quickly", "Cats sleep all day", "A quiet library of books"] * 6
    with open(data / "corpus.jsonl", "w") as f:
        for i, text in enumerate(docs):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "runs"}) + "\n")
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\td0\t1\n")
    emb = embed_corpus(data, tmp_path / "emb", EmbedConfig(model=str(tiny_encoder), max_length=16))
    index = load_index(build_index(data, emb, tmp_path / "index"))
    hits = index.retriever("bm25").search(["runs", "cat", "the of"], 20)
    assert {d for d, *_ in hits[0]} == {f"d{i}" for i in range(0, 18, 3)}
    assert {d for d, *_ in hits[1]} == {f"d{i}" for i in range(1, 18, 3)}
    assert hits[2] == []  # stopwords only


def test_index_round_trip_and_manifest(built):
    index = load_index(built[2])
    m = index.manifest
    assert m["stage"] == "index" and m["counts"]["documents"] == 60
    assert m["methods"]["pq"]["factory"] == "PQ8x4fs"  # 32-d tiny encoder: dim / 4
    assert index.doc_ids == list(load_corpus(built[0]))
    assert set(m["inputs"]) == {"data", "embeddings"}
    assert index.size_bytes("pq") < index.size_bytes("dense")
    assert index.document("d3")["title"].startswith("topic 3")
    assert m["query_encoder"]["path"] == "encoder" and (built[2] / "encoder" / "config.json").is_file()


def test_load_names_what_is_missing_or_corrupt(built, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(built[2], copy)
    (copy / "pq.faiss").unlink()
    with pytest.raises(ArtifactError, match=r"pq\.faiss: missing"):
        load_index(copy)

    shutil.rmtree(copy)
    shutil.copytree(built[2], copy)
    data = (copy / "dense.faiss").read_bytes()
    (copy / "dense.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"dense\.faiss: .*truncated"):
        load_index(copy)

    (copy / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest.json: missing"):
        load_index(copy)
    with pytest.raises(ArtifactError, match="no such index directory"):
        load_index(tmp_path / "nowhere")


def test_unavailable_and_unknown_methods_say_why(built):
    index = load_index(built[2])
    with pytest.raises(ArtifactError, match="'nci' is not available: the index was built without"):
        index.retriever("nci")
    with pytest.raises(ValueError, match="unknown method 'colbert'"):
        index.retriever("colbert")


def test_tiny_corpus_builds_without_pq(tmp_path, tiny_encoder):
    corpus = make_corpus(n_docs=10, n_topics=2)
    data = write_beir(corpus, tmp_path / "data")
    emb = embed_corpus(data, tmp_path / "emb", EmbedConfig(model=str(tiny_encoder), max_length=16))
    index = load_index(build_index(data, emb, tmp_path / "index", config=IndexConfig(link=False)))
    assert "needs >= 16" in index.methods()["pq"]
    assert len(index.retriever("dense").search(["x"], 100)[0]) == 10


def test_build_rejects_embeddings_of_another_corpus(tmp_path, tiny_encoder, built):
    other = write_beir(make_corpus(n_docs=12, seed=3), tmp_path / "other")
    with pytest.raises(ArtifactError, match="not the 12 documents"):
        build_index(other, built[1], tmp_path / "index")
    assert not (tmp_path / "index").exists()


def test_search_and_evaluate_commands(built, capsys):
    from nci import evaluate, search

    assert search.main(["--index", str(built[2]), "--method", "bm25", "--k", "2", "--json", "topic"]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[0])
    assert out["query"] == "topic" and len(out["results"]) <= 2

    assert (
        evaluate.main(["--data", str(built[0]), "--index", str(built[2]), "--method", "dense", "--k", "10"])
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["queries"] == len(load_qrels(built[0], "test"))
    assert 0 <= metrics["success@1"] <= metrics["success@10"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "folder", "key", "low", "high"),
    [
        # published BM25 runs on BEIR SciFact reach nDCG@10 0.665 (BEIR paper) to about 0.69
        ("scifact", "scifact", "ndcg@10", 0.665, 0.70),
        # SQuAD v1.1 dev, per-paragraph 80/20 split: BM25 finds the paragraph in the top 10 ~95%
        ("squad", "squad-v1.1-dev", "success@10", 0.93, 0.97),
    ],
)
def test_bm25_on_real_data_matches_published_figures(tmp_path, name, folder, key, low, high):
    import bm25s

    from nci.data import document_text, prepare
    from nci.evaluate import evaluate, ranked_run
    from nci.retrieval import search_batched
    from nci.retrieval.bm25 import BM25Retriever, build_bm25
    from nci.settings import get_settings

    root = get_settings().datasets
    if root is None or not (root / folder).exists():
        pytest.skip(f"needs NCI_DATASETS pointing at a folder with {folder}/")
    data = tmp_path / name
    prepare(name, data, src=root / folder)
    corpus = load_corpus(data)
    doc_ids = list(corpus)
    build_bm25([document_text(corpus[d]) for d in doc_ids], tmp_path / "bm25")
    bm25 = BM25Retriever("bm25", bm25s.BM25.load(str(tmp_path / "bm25")), doc_ids)
    queries = split_queries(data, "test")
    qids = list(queries)
    results = search_batched(bm25, [queries[q] for q in qids], 100)
    assert low <= evaluate(ranked_run(qids, results), load_qrels(data, "test"))[key] <= high
