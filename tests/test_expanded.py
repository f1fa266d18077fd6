"""bm25-expanded: BM25 over documents expanded with the training queries judged relevant to them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nci.retrieval import LiveDocument, Searcher, load_index

NONCE = "zorblat quixel frumption"


@pytest.fixture(scope="module")
def expanded_index(tiny_encoder, tmp_path_factory):
    """The synthetic corpus with one more training query, of words no document has, judged
    relevant to the first document; embedded with the tiny BERT and indexed without a model."""
    from nci.embed import EmbedConfig, embed_corpus
    from nci.index import build_index
    from nci.synthetic import make_corpus, write_beir

    corpus = make_corpus()
    first = next(iter(corpus.corpus))
    corpus.queries["nonce"] = NONCE
    corpus.qrels["train"]["nonce"] = {first: 1}
    root = tmp_path_factory.mktemp("expanded")
    data = write_beir(corpus, root / "data")
    emb = embed_corpus(data, root / "emb", EmbedConfig(model=str(tiny_encoder), max_length=64))
    return build_index(data, emb, root / "index"), first, corpus


def _live(searcher: Searcher, doc_id: str, text: str) -> LiveDocument:
    vector = np.zeros(searcher.corpus.dim, dtype=np.float32)
    vector[0] = 1.0
    return LiveDocument(doc_id, "", text, vector)


def test_a_document_is_found_by_the_words_of_its_training_queries(expanded_index):
    path, first, corpus = expanded_index
    index = load_index(path)
    assert index.methods()["bm25-expanded"] is None
    entry = index.manifest["methods"]["bm25-expanded"]
    train = corpus.qrels["train"]
    assert entry["queries"] == entry["query_document_pairs"] == len(train)  # one document a query
    assert entry["queries_from"].startswith("every training query")
    stored = {}
    for line in (path / "bm25-expanded" / "queries.jsonl").read_text().splitlines():
        row = json.loads(line)
        stored[row["doc_id"]] = row["queries"]
    # every training query is stored with the document it names, and only those
    wanted: dict[str, list[str]] = {}
    for qid, docs in train.items():
        for doc_id in docs:
            wanted.setdefault(doc_id, []).append(corpus.queries[qid])
    assert {d: sorted(q) for d, q in stored.items()} == {d: sorted(q) for d, q in wanted.items()}
    searcher = Searcher(index)
    assert searcher.search("bm25", [NONCE], 5)[0] == []  # no document has these words
    hits = searcher.search("bm25-expanded", [NONCE], 5)[0]
    assert [h.doc_id for h in hits] == [first] and hits[0].source == "bm25-expanded"


def test_live_changes_drop_the_queries_of_a_replaced_or_deleted_document(expanded_index):
    path, first, corpus = expanded_index
    searcher = Searcher(load_index(path))
    searcher.add([_live(searcher, "new", "a harbour ferry timetable")])
    assert searcher.search("bm25-expanded", ["ferry timetable"], 1)[0][0].doc_id == "new"
    assert searcher.search("bm25-expanded", [NONCE], 1)[0][0].doc_id == first
    searcher.remove([first])
    assert searcher.search("bm25-expanded", [NONCE], 5)[0] == []
    searcher.add([_live(searcher, first, "a new text under the old id")])
    assert searcher.search("bm25-expanded", [NONCE], 5)[0] == []  # asked about the old text
    assert searcher.search("bm25-expanded", ["new text under the old id"], 1)[0][0].doc_id == first


def test_the_queries_a_model_learned_from_are_those_its_training_read(tiny_index, synthetic_data):
    from nci.data import load_corpus, split_queries
    from nci.semantic_ids import load_semantic_ids
    from nci.train.config import TrainConfig
    from nci.train.data import learned_queries, load_training_data, validation_query_ids

    doc_ids = list(load_corpus(synthetic_data))
    cfg = TrainConfig(val_fraction=0.3)
    sem = load_semantic_ids(tiny_index.parent / "ids")
    training = load_training_data(synthetic_data, sem, [], cfg)
    query = training.sources.index("query")
    read = {
        (training.texts[t], sem.doc_ids[d])
        for t, d, src in zip(
            training.example_text, training.example_doc, training.example_source, strict=True
        )
        if src == query
    }
    learned = learned_queries(synthetic_data, doc_ids, cfg)
    assert {(text, d) for d, qs in learned.items() for text in qs.values()} == read
    held_out = set(validation_query_ids(synthetic_data, doc_ids, cfg))
    assert held_out and not held_out & {q for qs in learned.values() for q in qs}
    everything = learned_queries(synthetic_data, doc_ids, None)
    assert {q for qs in everything.values() for q in qs} == set(split_queries(synthetic_data, "train"))


def test_with_a_model_the_fusion_fits_bm25_expanded_on_the_queries_it_left_out(
    tiny_index, synthetic_data, synthetic_embeddings, tmp_path
):
    import shutil

    from nci.index import build_index
    from nci.retrieval.expanded import read_expansions

    model = shutil.copytree(tiny_index.parent / "model", tmp_path / "model")
    (model / "train_config.json").write_text(json.dumps({"val_fraction": 0.3, "seed": 0}))
    out = build_index(
        synthetic_data,
        synthetic_embeddings,
        tmp_path / "index",
        ids=tiny_index.parent / "ids",
        model=model,
        fusion=synthetic_data,
    )
    info = json.loads((out / "fusion.json").read_text())
    assert info["on"] == "the training queries nci train held out" and "excluded" not in info
    assert "bm25-expanded" in info["single"] and "bm25-expanded" in info["weights"]
    index = load_index(out)
    assert index.manifest["methods"]["bm25-expanded"]["queries_from"].startswith(
        "the training queries the model"
    )
    from nci.fusion import validation_queries

    _, validation, _ = validation_queries(synthetic_data, index)
    expanded = read_expansions(out)
    assert not set(validation) & {q for row in expanded for q in row["query_ids"]}


def test_without_training_queries_the_method_is_unavailable(synthetic_data, synthetic_embeddings, tmp_path):
    import shutil

    from nci.index import build_index

    data = shutil.copytree(synthetic_data, tmp_path / "data")
    (data / "qrels" / "train.tsv").unlink()
    out = build_index(data, synthetic_embeddings, tmp_path / "index")
    assert "no training queries" in load_index(out).methods()["bm25-expanded"]
    assert not (out / "bm25-expanded").exists()


def test_the_fit_gives_a_weight_to_an_expanded_part_that_ranks_best():
    from nci.fusion import fit_grid
    from nci.retrieval.hits import Hit

    qids = [f"q{i}" for i in range(8)]
    qrels = {q: {f"d{i}": 1} for i, q in enumerate(qids)}
    docs = [f"d{i}" for i in range(8)]

    def ranking(part: str, i: int, right_at: int) -> list:
        others = [d for d in docs if d != f"d{i}"]
        order = others[:right_at] + [f"d{i}"] + others[right_at:]
        return [Hit(d, float(len(order) - r), part) for r, d in enumerate(order)]

    # every part ranks the relevant document third, bm25-expanded first
    per_part = {
        p: [ranking(p, i, 0 if p == "bm25-expanded" else 2) for i in range(8)]
        for p in ("nci", "dense", "bm25", "bm25-expanded")
    }
    config, score, single = fit_grid(per_part, qids, qrels)
    assert single["bm25-expanded"] == pytest.approx(1.0) and single["bm25"] == pytest.approx(0.5)
    assert config.weights["bm25-expanded"] > 0 and score == pytest.approx(1.0)


def test_adding_an_expanded_part_never_lowers_the_fit():
    """The search around BM25 starts where the fit without bm25-expanded goes and only keeps
    improvements; the search around bm25-expanded can only add a better fit."""
    from nci.fusion import fit_grid
    from nci.retrieval.hits import Hit

    rng = np.random.default_rng(0)
    qids = [f"q{i}" for i in range(12)]
    qrels = {q: {f"d{i}": 1} for i, q in enumerate(qids)}
    docs = [f"d{i}" for i in range(12)]

    def random_ranking(part: str) -> list:
        order = rng.permutation(docs)
        return [Hit(str(d), float(len(order) - r), part) for r, d in enumerate(order)]

    for _ in range(3):
        per_part = {p: [random_ranking(p) for _ in qids] for p in ("nci", "dense", "bm25")}
        without, score_without, _ = fit_grid(per_part, qids, qrels)
        per_part["bm25-expanded"] = [random_ranking("bm25-expanded") for _ in qids]
        with_it, score_with, _ = fit_grid(per_part, qids, qrels)
        assert score_with >= score_without - 1e-12
        assert set(with_it.weights) == {"nci", "dense", "bm25", "bm25-expanded"}


def test_named_documents_script_splits_the_test_queries_and_scores_each_subset(
    tiny_encoder, tmp_path, capsys
):
    from script_module import load_script

    from nci.data import load_corpus, load_qrels, split_queries
    from nci.evaluate import MEASURES, evaluate, ranked_run
    from nci.synthetic import make_corpus, write_beir

    corpus = make_corpus()
    data = write_beir(corpus, tmp_path / "data")
    # one test query about a document no training query names
    train_docs = {d for rel in corpus.qrels["train"].values() for d in rel}
    lonely = next(d for d in load_corpus(data) if d not in train_docs)
    with open(data / "qrels" / "test.tsv", "a") as f:
        f.write(f"{next(iter(corpus.queries))}\t{lonely}\t1\n")
    script = load_script("named_documents")
    named, other = script.split(data, tmp_path / "no-index")  # no model: every training query
    test = load_qrels(data, "test")
    assert sorted(named + other) == sorted(test) and not set(named) & set(other)
    assert all(any(d in train_docs for d in test[q]) for q in named)
    assert other and all(not any(d in train_docs for d in test[q]) for q in other)

    from nci.embed import EmbedConfig, embed_corpus
    from nci.index import build_index

    emb = embed_corpus(data, tmp_path / "emb", EmbedConfig(model=str(tiny_encoder), max_length=64))
    index = build_index(data, emb, tmp_path / "index")
    out = tmp_path / "figures.json"
    assert (
        script.main(["--data", str(data), "--index", str(index), "--methods", "bm25", "--json", str(out)])
        == 0
    )
    figures = json.loads(out.read_text())
    assert figures["queries"] == {"named": len(named), "not named": len(other)}
    texts = split_queries(data, "test")
    hits = Searcher(load_index(index)).search("bm25", [texts[q] for q in other], 10)
    direct = evaluate(ranked_run(other, hits), {q: test[q] for q in other}, {"ndcg@10": MEASURES["ndcg@10"]})
    assert figures["bm25"]["not named"]["ndcg@10"] == pytest.approx(direct["ndcg@10"])
    assert "| bm25 |" in capsys.readouterr().out
