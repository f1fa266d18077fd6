"""scripts/error_depth.py: where top-1 errors part from the relevant document in the id tree."""

from __future__ import annotations

import pytest
from script_module import load_script

from nci.data import load_qrels, split_queries
from nci.evaluate import judged_queries
from nci.retrieval import load_index, search_batched


@pytest.fixture(scope="module")
def script():
    return load_script("error_depth")


def test_shared_prefix(script):
    assert script.shared_prefix((1, 2, 3), (1, 2, 0)) == 2
    assert script.shared_prefix((1, 2), (1, 2, 0)) == 2
    assert script.shared_prefix((0,), (1,)) == 0


def test_step_log_probs_add_up_to_the_beam_search_score(script, tiny_index, synthetic_data):
    """Teacher forcing renormalised over the existing digits gives the per-step terms the
    trie-constrained beam search sums: their total is the score of each hit it returns."""
    from nci.model import NCIModel
    from nci.semantic_ids import load_semantic_ids

    index = load_index(tiny_index)
    sem = load_semantic_ids(tiny_index / "ids")
    ids = dict(zip(sem.doc_ids, (tuple(i) for i in sem.ids), strict=True))
    model = NCIModel.from_pretrained(tiny_index / "model").eval()
    texts = list(split_queries(synthetic_data, "test").values())[:4]
    hits = search_batched(index.retriever("nci", beam=5), texts, 3)
    for text, ranked in zip(texts, hits, strict=True):
        paths = [ids[hit.doc_id] for hit in ranked]
        for hit, steps in zip(ranked, script.step_log_probs(model, sem.trie, text, paths), strict=True):
            assert len(steps) == len(ids[hit.doc_id]) and all(s <= 0 for s in steps)
            assert sum(steps) == pytest.approx(hit.score, abs=0.05)


def test_main_counts_every_wrong_top_hit(script, tiny_index, synthetic_data, capsys):
    args = ["--index", str(tiny_index), "--data", str(synthetic_data), "--split", "test"]
    assert script.main([*args, "--methods", "nci,bm25,pq"]) == 0
    out = capsys.readouterr().out
    qrels, texts = load_qrels(synthetic_data, "test"), split_queries(synthetic_data, "test")
    qids = judged_queries(qrels)
    index = load_index(tiny_index)
    total = 0
    for method, opts in (("nci", {"beam": 10}), ("bm25", {}), ("pq", {})):
        hits = search_batched(index.retriever(method, **opts), [texts[q] for q in qids], 10)
        wrong = sum(1 for q, h in zip(qids, hits, strict=True) if h and qrels[q].get(h[0].doc_id, 0) <= 0)
        row = next(line for line in out.splitlines() if line.startswith(f"| {method} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[1]) == wrong and sum(int(c) for c in cells[2:]) == wrong
        total += wrong
    assert total > 0  # the rough PQ codes (and the untrained model) miss some: the counts are checked
