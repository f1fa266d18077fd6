"""Metrics against hand-computed values, the missing-query rule, and TREC run files."""

from __future__ import annotations

import math

import pytest

from nci.evaluate import (
    evaluate,
    evaluate_per_query,
    ranked_run,
    read_trec_run,
    scored_run,
    write_trec_run,
)

QRELS = {
    "q1": {"a": 1},  # one relevant document
    "q2": {"b": 1, "c": 2},  # two relevant, graded
    "q3": {"d": 1},  # the run has nothing for it
}
RUN = {
    "q1": {"a": 3.0, "x": 2.0, "y": 1.0},  # relevant at rank 1
    "q2": {"x": 5.0, "c": 4.0, "y": 3.0, "b": 2.0},  # relevant at ranks 2 and 4
}


def test_metrics_match_hand_computed_values():
    m = evaluate(RUN, QRELS)
    # q1 hits at rank 1, q2 at rank 2, q3 has no results: three queries in every mean
    assert m["success@1"] == pytest.approx(1 / 3)
    assert m["success@10"] == pytest.approx(2 / 3)
    assert m["success@100"] == pytest.approx(2 / 3)
    assert m["mrr@100"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert m["recall@10"] == pytest.approx((1 + 1 + 0) / 3)
    # nDCG@10 for q2: gains c=2 at rank 2, b=1 at rank 4; ideal c then b
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg@10"] == pytest.approx((1 + dcg / idcg + 0) / 3)


def test_query_missing_from_run_counts_as_zero():
    per_query = evaluate_per_query(RUN, QRELS)
    assert set(per_query) == {"q1", "q2", "q3"}
    assert all(v == 0.0 for v in per_query["q3"].values())
    # dropping q3 from the qrels changes the denominator, not q1/q2's values
    m = evaluate(RUN, {q: QRELS[q] for q in ("q1", "q2")})
    assert m["success@1"] == pytest.approx(1 / 2)


def test_empty_run_scores_zero_and_unjudged_queries_are_left_out():
    assert evaluate({}, QRELS)["success@10"] == 0.0
    # a query whose only judgements are non-relevant (Cranfield's -1) has nothing to find
    qrels = {**QRELS, "q4": {"a": -1, "b": 0}}
    assert set(evaluate_per_query(RUN, qrels)) == {"q1", "q2", "q3"}
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate(RUN, {"q4": {"a": 0}})


def test_ranked_run_keeps_the_retrievers_order_on_ties():
    # equal scores: trec_eval would order by doc id; ranked_run keeps the retriever's order
    results = [[("z", 1.0), ("a", 1.0)]]
    qrels = {"q": {"z": 1}}
    assert evaluate(ranked_run(["q"], results), qrels)["success@1"] == 1.0
    run = ranked_run(["q"], [[("d1", 0.5), ("d2", 0.9), ("d1", 0.1)]])
    assert run == {"q": {"d1": 3.0, "d2": 2.0}}


def test_trec_run_round_trip(tmp_path):
    run = scored_run(["q1", "q2"], [[("a", 2.5), ("b", 1.0)], [("c", 0.25)]])
    path = tmp_path / "runs" / "m.trec"
    write_trec_run(path, run, tag="dense")
    lines = path.read_text().splitlines()
    assert lines == ["q1 Q0 a 1 2.5 dense", "q1 Q0 b 2 1 dense", "q2 Q0 c 1 0.25 dense"]
    assert read_trec_run(path) == run
    with pytest.raises(ValueError, match="whitespace"):
        write_trec_run(path, run, tag="two words")


def test_qrels_grades_script_reports_where_each_grade_ranks(tmp_path, capsys):
    from script_module import load_script

    script = load_script("qrels_grades")
    (tmp_path / "qrels").write_text("1 10 -1\r\n1  11 2\n2 20 -1\n2 21 2\n2 99 4\n")
    (tmp_path / "bm25.trec").write_text(
        "1 Q0 10 1 3.0 bm25\n1 Q0 11 2 2.0 bm25\n2 Q0 21 1 5.0 bm25\n2 Q0 20 2 4.0 bm25\n"
    )
    rows = script.read_raw_qrels(tmp_path / "qrels")
    table = script.grade_table(rows, script.read_trec_run(tmp_path / "bm25.trec"))
    assert [(r["grade"], r["rows"], r["median_rank"], r["top1"]) for r in table] == [
        (-1, 2, 1.5, 0.5),
        (2, 2, 1.5, 0.5),
        (4, 1, 3, 0.0),  # not retrieved: rank depth + 1
    ]
    assert script.main(["--qrels", str(tmp_path / "qrels"), "--run", str(tmp_path / "bm25.trec")]) == 0
    assert "| bm25 | -1 | 2 | 1.5 | 0.500 | 1.000 |" in capsys.readouterr().out
