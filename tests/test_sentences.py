"""dense-sentences and bm25-sentences: documents ranked by their best sentence, over live changes."""

from __future__ import annotations

import numpy as np
import pytest

from nci.retrieval import LiveDocument, Searcher, load_index
from nci.retrieval.sentences import document_sentences

SENTENCE_METHODS = ("dense-sentences", "bm25-sentences")
LONG = (
    "Harbour records. The ferry timetable changed in spring. Zorblat quixel frumption vantor. "
    "Nothing else happened that year. The pier was painted green."
)


def _live(searcher: Searcher, doc_id: str, title: str, text: str) -> LiveDocument:
    vector = np.zeros(searcher.corpus.dim, dtype=np.float32)
    vector[0] = 1.0
    return LiveDocument(doc_id, title, text, vector)


def test_a_document_scores_as_its_best_sentence(plain_index):
    index = load_index(plain_index)
    assert all(index.methods()[m] is None for m in SENTENCE_METHODS)
    searcher = Searcher(index)
    searcher.add([_live(searcher, "long", "", LONG)])
    query = "zorblat quixel frumption vantor"
    for method in SENTENCE_METHODS:
        hits = searcher.search(method, [query], 10)[0]
        assert hits[0].doc_id == "long", method
        assert len(hits) == len({h.doc_id for h in hits})  # one hit per document
        assert all(h.source == method for h in hits)
    # dense: the document's score is the best inner product over its own sentences
    encoder = index.query_encoder
    sentences = document_sentences("", LONG)
    assert len(sentences) == 4  # "Harbour records." (two words) joins the next
    best = float((encoder.encode(sentences) @ encoder.encode([query])[0]).max())
    assert searcher.search("dense-sentences", [query], 1)[0][0].score == pytest.approx(best, rel=1e-5)


def test_deletions_and_additions_reach_the_sentence_methods(plain_index):
    index = load_index(plain_index)
    searcher = Searcher(index)
    built = index.doc_ids[3]
    (own,) = document_sentences(**index.document(built))  # a query that is its one sentence
    for method in SENTENCE_METHODS:
        assert searcher.search(method, [own], 1)[0][0].doc_id == built, method
    searcher.add([_live(searcher, "long", "", LONG)])
    searcher.remove([built, "long"])
    for method in SENTENCE_METHODS:
        lists = searcher.search(method, [own, "zorblat quixel frumption vantor"], 60)
        found = {h.doc_id for hits in lists for h in hits}
        assert built not in found and "long" not in found, method
        if method == "dense-sentences":  # every other document has a similarity
            assert len(lists[0]) == 59


def test_the_search_goes_deeper_when_one_document_fills_the_sentence_list(plain_index):
    searcher = Searcher(load_index(plain_index))
    many = " ".join(f"Zorblat quixel harbour number {i} was quiet." for i in range(40))
    searcher.add([_live(searcher, "many", "", many)])
    hits = searcher.search("dense-sentences", ["zorblat quixel harbour number was quiet"], 5)[0]
    assert hits[0].doc_id == "many"
    assert len(hits) == 5 and len({h.doc_id for h in hits}) == 5


def test_sentence_methods_are_not_built_past_the_size_limit(synthetic_data, synthetic_embeddings, tmp_path):
    from nci.index import IndexConfig, build_index

    config = IndexConfig(sentence_max_docs=10)
    out = build_index(synthetic_data, synthetic_embeddings, tmp_path / "index", config=config)
    methods = load_index(out).methods()
    for method in SENTENCE_METHODS:
        assert "sentence_max_docs" in methods[method]
    assert methods["dense"] is None and methods["bm25"] is None
    assert not (out / "sentences").exists()


def test_fusion_counts_the_files_of_the_parts_it_weights(tiny_index, tmp_path):
    """The files fusion loads, and so its size: those of the parts its fit weights, the parts it
    needs (nci, dense, bm25) and the sentence methods alike; a part at weight 0, which it does not
    load, is not counted."""
    import json
    import shutil

    copy = shutil.copytree(tiny_index, tmp_path / "index")
    manifest = json.loads((copy / "manifest.json").read_text())

    def weigh(**weights):
        for name, weight in weights.items():
            manifest["methods"]["fusion"]["weights"][name.replace("_", "-")] = weight
        (copy / "manifest.json").write_text(json.dumps(manifest))
        return set(load_index(copy).method_files("fusion"))

    for weight, counted in ((1.0, True), (0.0, False)):
        files = weigh(nci=1.0, dense=1.0, bm25=1.0, dense_sentences=weight)
        assert ("sentences/dense.faiss" in files) is counted
        assert {"dense.faiss", "bm25", "fusion.json"} <= files  # its parts' and its own
    files = weigh(bm25=0.0)
    assert "bm25" not in files and "dense.faiss" in files


def test_a_corpus_with_every_document_deleted_returns_nothing(plain_index):
    index = load_index(plain_index)
    searcher = Searcher(index)
    searcher.remove(list(index.doc_ids))
    for method in SENTENCE_METHODS:
        assert searcher.search(method, ["topic 1"], 5) == [[]]
