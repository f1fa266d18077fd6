"""``nci search``: rank documents of an index for queries given on the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nci.retrieval import add_ensemble_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, type=Path, help="index directory (nci index build)")
    p.add_argument("--method", default="dense", help="nci, dense, pq, bm25 or nci+dense (default dense)")
    p.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--beam", type=int, default=None, help="nci beam size (default: max(k, 10))")
    p.add_argument("--rerank", type=int, default=0, help="pq only: re-rank k*R candidates exactly")
    add_ensemble_argument(p, note="; end the list with -- before the queries")
    p.add_argument("--json", action="store_true", help="print one JSON object per query")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and FAISS")
    p.add_argument("queries", nargs="+", metavar="QUERY")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Search an index.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be >= 1")
    from nci.retrieval import ensemble, load_index, set_threads

    if args.threads:
        set_threads(args.threads)
    index = load_index(args.index)
    opts = {"beam": args.beam or max(args.k, 10)} if args.method.startswith("nci") else {}
    if args.method == "pq" and args.rerank:
        opts["rerank"] = args.rerank
    if args.ensemble:
        if args.method != "nci":
            parser.error("--ensemble works with --method nci")
        retriever = ensemble([index, *(load_index(p) for p in args.ensemble)], beam=opts["beam"])
    else:
        retriever = index.retriever(args.method, **opts)
    results = retriever.search(list(args.queries), args.k)
    for query, hits in zip(args.queries, results, strict=True):
        if args.json:
            print(
                json.dumps(
                    {
                        "query": query,
                        "method": args.method,
                        "results": [
                            {"id": doc_id, "score": round(score, 6), "title": index.document(doc_id)["title"]}
                            for doc_id, score in hits
                        ],
                    }
                )
            )
            continue
        print(f"# {query}")
        if not hits:
            print("  (no results)")
        for rank, (doc_id, score) in enumerate(hits, 1):
            title = index.document(doc_id)["title"] or index.document(doc_id)["text"][:60]
            print(f"{rank:>4}  {doc_id}\t{score:.4f}\t{title}")
    return 0


if __name__ == "__main__":
    from nci.cli import setup_logging

    setup_logging()
    sys.exit(main())
