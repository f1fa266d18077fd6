"""Test figures split by whether a training query names a relevant document of the test query.

A model trained on a collection's queries (NCI), or an index expanded with them (bm25-expanded),
has something to go on for a test query whose relevant documents training queries also asked
about, and nothing for the others. This splits the judged test queries into those two subsets
and prints success@1 / @10 and nDCG@10 of each method on each (NCI at beam 10, as in the fusion):

    python scripts/named_documents.py --data DATA_DIR --index INDEX_DIR \
        --methods nci,bm25,bm25-expanded,fusion

With ``--json PATH`` the figures are also written as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

MEASURES = ("success@1", "success@10", "ndcg@10")


def split(data: Path, index: Path, split_name: str = "test") -> tuple[list[str], list[str]]:
    """(test queries with a relevant document some training query names, the other test queries).
    The training queries are those the index's model learned from (its held-out share left out),
    as bm25-expanded takes them; all of them when the index has no model training config."""
    from nci.data import load_corpus, load_qrels
    from nci.evaluate import judged_queries
    from nci.train.data import learned_queries, read_train_config

    cfg = read_train_config(Path(index) / "model")
    named = set(learned_queries(data, list(load_corpus(data)), cfg))
    test = load_qrels(data, split_name)
    qids = judged_queries(test)
    first = [q for q in qids if any(d in named for d, grade in test[q].items() if grade > 0)]
    chosen = set(first)
    return first, [q for q in qids if q not in chosen]


def main(argv: list[str] | None = None) -> int:
    from nci.data import load_qrels, split_queries
    from nci.evaluate import MEASURES as ALL_MEASURES
    from nci.evaluate import evaluate, ranked_run
    from nci.retrieval import Searcher, load_index, search_batched

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the dataset the index was built from")
    p.add_argument("--index", type=Path, required=True, help="index directory (nci index build)")
    p.add_argument("--methods", default="nci,dense,bm25,fusion", help="comma-separated methods")
    p.add_argument("--split", default="test", help="qrels split to score (default test)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    named, other = split(args.data, args.index, args.split)
    qrels, texts = load_qrels(args.data, args.split), split_queries(args.data, args.split)
    measures = {m: ALL_MEASURES[m] for m in MEASURES}
    searcher = Searcher(load_index(args.index))
    qids = named + other
    subsets = {"named": named, "not named": other}
    figures: dict[str, dict[str, dict[str, float]]] = {}
    print(f"{len(named)} of {len(qids)} {args.split} queries have a relevant document a training query names")
    print(f"| method | {len(named)} on named documents | {len(other)} on the others |")
    print("|---|---|---|")
    for method in args.methods.split(","):
        retriever = searcher.retriever(method, **({"beam": 10} if method == "nci" else {}))
        results = dict(zip(qids, search_batched(retriever, [texts[q] for q in qids], 10), strict=True))
        figures[method] = {}
        for name, sub in subsets.items():
            if sub:
                run = ranked_run(sub, [results[q] for q in sub])
                figures[method][name] = evaluate(run, {q: qrels[q] for q in sub}, measures)
        cells = [
            " / ".join(f"{figures[method][name][m]:.3f}" for m in MEASURES)
            if name in figures[method]
            else "–"
            for name in subsets
        ]
        print(f"| {method} | {cells[0]} | {cells[1]} |", flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"queries": {k: len(v) for k, v in subsets.items()}, **figures}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
