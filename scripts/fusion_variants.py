"""Which way of fusing NCI, dense and BM25? Compare combinations on validation queries only.

Runs each part once on the validation queries that ``nci index build --fusion`` fits on (the dev
split, else the training queries ``nci train`` held out: :func:`nci.fusion.validation_queries`),
or on the queries judged in ``--qrels`` (for an index built as if its corpus had no queries, the
judgements it never saw), then re-fuses their lists several ways. Each combination's weights are
fitted as the index's fusion fits them (:func:`nci.fusion.fit_grid`: NCI and dense from {0, 0.25,
0.5, 1, 2, 4} beside BM25's 1, then the optional parts' weights where the index has them, around
BM25 and around bm25-expanded; best nDCG@10), and so is the index's own choice over every
combination; a logistic regression over per-candidate features (each part: listed, min-max score,
1 / rank) is fitted on relevance. A fit scored on the queries it was fitted on flatters it, so
each is also scored by 2-fold cross-validation (repeated three times with seeded splits): fitted
on one half of the queries, measured on the other. Fixed rules, which fit nothing (the candidates
for a corpus without validation queries, :data:`nci.fusion.UNFITTED`), are scored on all the
queries.

    python scripts/fusion_variants.py --index INDEX --data DATA [--qrels FILE] [--limit N] \
        [--nci-beam 10] [--json OUT] [--fixed-only]

Prints a markdown table: success@1, success@10 and nDCG@10 of each part alone, of each fixed
rule, and of each combination fitted on all the queries and under cross-validation; ``--json``
writes the same figures to a file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from nci.data import load_queries
from nci.data.layout import read_qrels_rows
from nci.evaluate import MEASURES, evaluate, ranked_run
from nci.fusion import fit_grid, fusion_parts, validation_queries
from nci.retrieval import Searcher, load_index, search_batched
from nci.retrieval.fusion import COMBINATIONS, SENTENCE_PARTS, FusionConfig, fuse, normalised

SHOWN = ("success@1", "success@10", "ndcg@10")
GRIDS = {"rrf": "rrf", "minmax": "score", "zscore": "zscore"}  # row name -> combination
FOLD_SEEDS = (0, 1, 2)
# Fixed rules (nothing fitted): every combination with equal weights, with and without NCI, and
# with NCI at half weight; each also with the sentence methods at weight 1 (where the index has them).
FIXED = {
    f"{how}, {name}": (how, weights)
    for how in ("rrf", "minmax", "zscore")
    for name, weights in (
        ("nci 1, dense 1, bm25 1", {"nci": 1.0, "dense": 1.0, "bm25": 1.0}),
        ("nci 0.5, dense 1, bm25 1", {"nci": 0.5, "dense": 1.0, "bm25": 1.0}),
        ("dense 1, bm25 1", {"nci": 0.0, "dense": 1.0, "bm25": 1.0}),
    )
}
WITH_SENTENCES = {
    f"{name}, sentences 1": (how, {**weights, **dict.fromkeys(SENTENCE_PARTS, 1.0)})
    for name, (how, weights) in FIXED.items()
}


def fused(lists: dict, weights: dict[str, float], how: str) -> list[tuple[str, float]]:
    """One query's fused ranking by the index's own fusion (:func:`nci.retrieval.fusion.fuse`)."""
    config = FusionConfig("score" if how == "minmax" else how, weights)
    return [(h.doc_id, h.score) for h in fuse(lists, config, 100)]


def features(lists: dict) -> tuple[list[str], np.ndarray]:
    """Per candidate: for each part, whether it listed it, its min-max score and 1 / rank."""
    rows: dict[str, np.ndarray] = {}
    parts = list(lists)
    for j, part in enumerate(parts):
        hits = lists[part]
        if not hits:
            continue
        values = normalised([h.score for h in hits], "score")
        for rank, (hit, v) in enumerate(zip(hits, values, strict=True), start=1):
            row = rows.setdefault(hit.doc_id, np.zeros(3 * len(parts)))
            row[3 * j : 3 * j + 3] = (1.0, v, 1.0 / rank)
    docs = list(rows)
    return docs, np.array([rows[d] for d in docs]).reshape(len(docs), 3 * len(parts))


class Study:
    def __init__(self, qids: list[str], qrels: dict, per_part: dict[str, list]):
        self.qids, self.qrels, self.per_part = qids, qrels, per_part
        self.measures = {m: MEASURES[m] for m in SHOWN}

    def lists(self, i: int) -> dict:
        return {p: self.per_part[p][i] for p in self.per_part}

    def score(self, rankings: list, idx: list[int]) -> dict[str, float]:
        q = [self.qids[i] for i in idx]
        return evaluate(
            ranked_run(q, [rankings[i] for i in idx]), {x: self.qrels[x] for x in q}, self.measures
        )

    def grid(self, combinations: tuple[str, ...], fit: list[int]):
        """Rankings of every query under the index's grid fitted on the queries ``fit``."""
        config, _, _ = fit_grid(
            {p: [hits[i] for i in fit] for p, hits in self.per_part.items()},
            [self.qids[i] for i in fit],
            self.qrels,
            combinations,
        )
        lists = (self.lists(i) for i in range(len(self.qids)))
        return [[(h.doc_id, h.score) for h in fuse(x, config, 100)] for x in lists]

    def logistic(self, fit: list[int]):
        feats = [features(self.lists(i)) for i in range(len(self.qids))]
        X = np.vstack([feats[i][1] for i in fit])
        y = np.concatenate([[self.qrels[self.qids[i]].get(d, 0) > 0 for d in feats[i][0]] for i in fit])
        model = LogisticRegression(max_iter=2000).fit(X, y)
        return [
            sorted(zip(d, model.decision_function(x), strict=True), key=lambda t: -t[1])[:100]
            for d, x in feats
        ]

    def cross_validated(self, fitter) -> dict[str, float]:
        results = []
        for seed in FOLD_SEEDS:
            order = np.random.default_rng(seed).permutation(len(self.qids)).tolist()
            half = len(order) // 2
            for fit, held in ((order[:half], order[half:]), (order[half:], order[:half])):
                results.append(self.score(fitter(fit), held))
        return {m: float(np.mean([r[m] for r in results])) for m in SHOWN}


def judged_queries(data: Path, qrels_file: Path, limit: int | None) -> tuple[str, dict, dict]:
    """(where they come from, qid -> text, qrels) of the queries judged in ``qrels_file``: the
    first ``limit`` of them in a seeded shuffle when ``limit`` is set."""
    queries, qrels = load_queries(data), {}
    for _, qid, doc_id, grade in read_qrels_rows(qrels_file):
        qrels.setdefault(qid, {})[doc_id] = grade
    qids = [q for q in qrels if any(g > 0 for g in qrels[q].values())]
    if limit is not None and len(qids) > limit:
        qids = sorted(np.random.default_rng(0).choice(qids, limit, replace=False).tolist())
    return (
        f"the queries judged in {qrels_file.name}",
        {q: queries[q] for q in qids},
        {q: qrels[q] for q in qids},
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument(
        "--qrels", type=Path, help="judgements of held-out queries (default: the validation queries)"
    )
    p.add_argument("--limit", type=int, help="at most this many of --qrels' queries (a seeded sample)")
    p.add_argument("--nci-beam", type=int, default=10, help="NCI's beam, its list's length (default 10)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument(
        "--fixed-only", action="store_true", help="score the parts and the fixed rules only (no fitting)"
    )
    args = p.parse_args(argv)
    index = load_index(args.index)
    if args.qrels:
        where, queries, qrels = judged_queries(args.data, args.qrels, args.limit)
    else:
        where, queries, qrels = validation_queries(args.data, index)
    if not queries:
        p.exit(2, "no validation queries: no dev split and no held-out training queries\n")
    qids = list(queries)
    texts = [queries[q] for q in qids]
    searcher = Searcher(index)
    parts = fusion_parts(index)
    if "bm25-expanded" in parts:
        from nci.retrieval.expanded import overlap

        why = overlap(index.path, queries)
        if why:  # as the index's own fit does
            print(f"leaving out bm25-expanded: {why}", file=sys.stderr)
            parts = tuple(p for p in parts if p != "bm25-expanded")
    per_part = {
        part: search_batched(
            searcher.retriever(part, **({"beam": args.nci_beam} if part == "nci" else {})),
            texts,
            args.nci_beam if part == "nci" else 100,
        )
        for part in parts
    }
    study = Study(qids, qrels, per_part)
    everyone = list(range(len(qids)))
    figures: dict[str, dict] = {}
    print(f"{len(qids)} queries ({where}); NCI at beam {args.nci_beam}\n")
    print("| method | fitted on all: success@1 / @10 / nDCG@10 | 2-fold cross-validation |")
    print("|---|---|---|")

    def row(name: str, on_all: dict | None, cv: dict | None) -> None:
        figures[name] = {"all": on_all, "cross_validated": cv}
        cell = lambda r: " / ".join(f"{r[m]:.3f}" for m in SHOWN) if r else "–"  # noqa: E731
        print(f"| {name} | {cell(on_all)} | {cell(cv)} |", flush=True)

    for part in parts:
        row(part, study.score(per_part[part], everyone), None)
    rules = {**FIXED, **(WITH_SENTENCES if set(SENTENCE_PARTS) <= set(parts) else {})}
    for name, (how, weights) in rules.items():
        rankings = [fused(study.lists(i), weights, how) for i in everyone]
        row(f"fixed: {name}", study.score(rankings, everyone), None)
    if not args.fixed_only:
        grids = {f"{how}, weights on the grid": (combination,) for how, combination in GRIDS.items()}
        for name, combinations in {**grids, "the index's fit (every combination)": COMBINATIONS}.items():
            fitter = lambda fit, c=combinations: study.grid(c, fit)  # noqa: E731
            row(name, study.score(fitter(everyone), everyone), study.cross_validated(fitter))
        row(
            "logistic regression",
            study.score(study.logistic(everyone), everyone),
            study.cross_validated(study.logistic),
        )
    if args.json:
        args.json.write_text(
            json.dumps({"queries": len(qids), "on": where, "figures": figures}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
