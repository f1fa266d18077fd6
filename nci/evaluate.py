"""Retrieval metrics, TREC run files, and ``nci evaluate``.

Metrics come from ir-measures (which runs trec_eval through pytrec_eval):

========================  ==================  ==============================================
result key                ir-measures         meaning
========================  ==================  ==============================================
``success@1/10/100``      ``Success@k``       1 if any relevant document is in the top k
                                              (what the NCI paper calls Recall@k)
``recall@10/100``         ``R@k``             share of the relevant documents in the top k
``mrr@100``               ``RR@100``          1 / rank of the first relevant document
``ndcg@10``               ``nDCG@10``         graded gain, log2 rank discount
========================  ==================  ==============================================

Every query with at least one relevant judgement (grade > 0) counts in the mean, also when the
run has no results for it (it scores 0): ir-measures averages only over the queries it computes,
so the mean is taken here over the qrels queries. Queries whose judgements are all non-relevant
(grade <= 0, as in Cranfield's -1 rows) have nothing to find and are left out. As in trec_eval,
documents are ranked by score and ties are broken by document id; :func:`ranked_run` turns a
ranked result list into scores that keep the retriever's own order.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import ir_measures
from ir_measures import RR, R, Success, nDCG

from nci.retrieval.ensemble import add_ensemble_argument

log = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]

# result key -> ir-measures measure
MEASURES = {
    "success@1": Success @ 1,
    "success@10": Success @ 10,
    "success@100": Success @ 100,
    "recall@10": R @ 10,
    "recall@100": R @ 100,
    "mrr@100": RR @ 100,
    "ndcg@10": nDCG @ 10,
}


def judged_queries(qrels: Mapping[str, Mapping[str, int]]) -> list[str]:
    """The queries that count in a mean: those with at least one relevant document."""
    return [q for q, rels in qrels.items() if any(g > 0 for g in rels.values())]


def evaluate_per_query(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    measures: Mapping[str, object] = MEASURES,
) -> dict[str, dict[str, float]]:
    """Per-query metrics ``{query id: {key: value}}`` for every judged query (0 when missing)."""
    qids = judged_queries(qrels)
    # Negative grades (Cranfield's -1) are "not relevant"; give them no gain.
    qrels_in = {q: {d: max(int(g), 0) for d, g in qrels[q].items()} for q in qids}
    run_in = {q: {d: float(s) for d, s in run[q].items()} for q in qids if run.get(q)}
    names = {str(m): key for key, m in measures.items()}
    out = {q: dict.fromkeys(measures, 0.0) for q in qids}
    if run_in:
        for metric in ir_measures.iter_calc(list(measures.values()), qrels_in, run_in):
            out[metric.query_id][names[str(metric.measure)]] = float(metric.value)
    return out


def evaluate(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    measures: Mapping[str, object] = MEASURES,
) -> dict[str, float]:
    """Mean metrics over all judged queries of ``qrels``; see the module docstring."""
    per_query = evaluate_per_query(run, qrels, measures)
    if not per_query:
        raise ValueError("no query in the qrels has a relevant document (grade > 0); nothing to evaluate")
    n = len(per_query)
    return {key: sum(v[key] for v in per_query.values()) / n for key in measures}


def ranked_run(qids: Sequence[str], results: Sequence[Sequence[tuple[str, float]]]) -> Run:
    """A run whose scores are ``n - rank``, so evaluation follows the retriever's order exactly.

    A document listed twice for one query keeps its best rank.
    """
    if len(qids) != len(results):
        raise ValueError(f"{len(qids)} query ids but {len(results)} result lists")
    run: Run = {}
    for qid, hits in zip(qids, results, strict=True):
        ranked: dict[str, float] = {}
        for rank, hit in enumerate(hits):  # (doc id, score, ...) tuples, e.g. nci.retrieval.Hit
            ranked.setdefault(hit[0], float(len(hits) - rank))
        run[qid] = ranked
    return run


def scored_run(qids: Sequence[str], results: Sequence[Sequence[tuple[str, float]]]) -> Run:
    """A run with the retriever's own scores (for TREC run files)."""
    if len(qids) != len(results):
        raise ValueError(f"{len(qids)} query ids but {len(results)} result lists")
    run: Run = {}
    for qid, hits in zip(qids, results, strict=True):
        scored: dict[str, float] = {}
        for hit in hits:
            scored.setdefault(hit[0], float(hit[1]))
        run[qid] = scored
    return run


def write_trec_run(path: str | Path, run: Mapping[str, Mapping[str, float]], tag: str) -> None:
    """Write ``qid Q0 docid rank score tag`` lines, best first (ties keep the run's order)."""
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag {tag!r} must be non-empty and contain no whitespace")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        for qid, docs in run.items():
            ordered = sorted(docs.items(), key=lambda item: -item[1])  # stable: ties keep order
            for rank, (doc_id, score) in enumerate(ordered, 1):
                f.write(f"{qid} Q0 {doc_id} {rank} {score:.6g} {tag}\n")
    tmp.replace(path)


def read_trec_run(path: str | Path) -> Run:
    """Read a TREC run file back into ``{qid: {docid: score}}``."""
    run: Run = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise ValueError(
                    f"{path}:{lineno}: expected 6 fields 'qid Q0 docid rank score tag', got {line!r}"
                )
            run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
    return run


# --- CLI -------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    from nci.search import add_index_arguments, add_method_arguments

    p.add_argument("--data", required=True, type=Path, help="prepared dataset (BEIR layout)")
    add_index_arguments(p)
    add_method_arguments(p, default="nci")
    p.add_argument("--split", default="test", help="qrels split to evaluate (default test)")
    p.add_argument("--k", type=int, default=100, help="results per query (default 100)")
    add_ensemble_argument(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and FAISS")
    p.add_argument("--run-out", type=Path, default=None, help="write the results as a TREC run file")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Evaluate one method of an index.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    from nci.data import load_qrels, split_queries
    from nci.live import open_live_index
    from nci.retrieval import ensemble, load_index, resolve_beam, search_batched, set_threads
    from nci.search import method_options

    if args.threads:
        set_threads(args.threads)
    try:
        opts = method_options(args)
    except ValueError as e:
        parser.error(str(e))
    qrels = load_qrels(args.data, args.split)
    queries = split_queries(args.data, args.split)
    if not queries:
        parser.error(f"{args.data}: no queries with qrels in split '{args.split}'")
    live = open_live_index(args.index, args.updates, read_only=True)
    if args.ensemble:
        if args.method != "nci":
            parser.error("--ensemble works with --method nci")
        indexes = [live.index, *(load_index(p) for p in args.ensemble)]
        retriever = ensemble(indexes, beam=resolve_beam(args.k, args.beam))
    else:
        retriever = live.retriever(args.method, **opts)
    qids = list(queries)
    results = search_batched(retriever, [queries[q] for q in qids], args.k, args.batch_size, progress=True)
    metrics = evaluate(ranked_run(qids, results), qrels)
    if args.run_out:
        write_trec_run(args.run_out, scored_run(qids, results), tag=args.method.replace(" ", "_"))
        log.info("run file -> %s", args.run_out)
    print(
        json.dumps(
            {
                "method": retriever.name if args.ensemble else args.method,
                "split": args.split,
                "queries": len(judged_queries(qrels)),
                **{key: round(v, 4) for key, v in metrics.items()},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    from nci.cli import setup_logging

    setup_logging()
    sys.exit(main())
