"""scripts/zero_shot_copy.py: a prepared dataset as if it had no queries, its judgements kept aside."""

from __future__ import annotations

from pathlib import Path

import pytest
from script_module import load_script

from nci.data import load_corpus, load_qrels, load_queries
from nci.data.layout import read_qrels_rows
from nci.recipe import corpus_stats


def _held_out(path: Path) -> dict[str, set[str]]:
    held: dict[str, set[str]] = {}
    for _, q, d, g in read_qrels_rows(path):
        if g > 0:
            held.setdefault(q, set()).add(d)
    return held


def test_hidden_queries_leave_the_corpus_and_test_split_alone(synthetic_data, tmp_path):
    out = tmp_path / "zs"
    assert load_script("zero_shot_copy").main(["--data", str(synthetic_data), "--out", str(out)]) == 0
    assert load_qrels(out / "data", "train") == {}
    assert load_qrels(out / "data", "test") == load_qrels(synthetic_data, "test")
    assert load_corpus(out / "data") == load_corpus(synthetic_data)
    train = load_qrels(synthetic_data, "train")
    assert _held_out(out / "heldout" / "train.tsv") == {
        q: {d for d, g in rels.items() if g > 0}
        for q, rels in train.items()
        if any(g > 0 for g in rels.values())
    }
    assert corpus_stats(out / "data").train_queries == 0


def test_a_cut_keeps_every_relevant_document_of_its_queries(synthetic_data, tmp_path):
    script = load_script("zero_shot_copy")
    out = tmp_path / "cut"
    assert (
        script.main(
            ["--data", str(synthetic_data), "--out", str(out), "--queries", "10", "--documents", "40"]
        )
        == 0
    )
    corpus, held = load_corpus(out / "data"), _held_out(out / "heldout" / "train.tsv")
    assert len(corpus) == 40 and len(held) == 10
    assert set().union(*held.values()) <= set(corpus)
    assert set(load_queries(out / "data")) == set(held)
    assert load_qrels(out / "data", "train") == load_qrels(out / "data", "test") == {}
    original = load_corpus(synthetic_data)
    assert all(corpus[d] == original[d] for d in corpus)
    # seeded: the same cut again
    again = tmp_path / "again"
    script.main(["--data", str(synthetic_data), "--out", str(again), "--queries", "10", "--documents", "40"])
    assert (again / "data" / "corpus.jsonl").read_bytes() == (out / "data" / "corpus.jsonl").read_bytes()
    with pytest.raises(SystemExit):
        script.main(["--data", str(synthetic_data), "--out", str(tmp_path / "x"), "--queries", "10"])
