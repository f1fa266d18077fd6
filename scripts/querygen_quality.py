"""How retrievable are pseudo-queries? BM25 self-retrieval against the real questions.

For each pseudo-query, BM25 over the whole corpus should find the document it was made from;
success@k is the share of queries whose source document is in the top k. The same figure for
the dataset's real test (and training) questions, judged by their qrels, is the reference:
generated queries should be at least as retrievable as real ones.

    python scripts/querygen_quality.py --data DATA_DIR \\
        --queries d2q=OUT/d2q daq=OUT/daq [--json quality.json]

Each ``--queries`` item is NAME=PATH, PATH a directory written by ``nci querygen`` or its
``pseudo_queries.jsonl``. BM25 is the project's lexical baseline (bm25s, English stemmer and
stopwords). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from nci.data import document_text, load_corpus, load_qrels, split_queries
from nci.querygen import PSEUDO_QUERIES, read_pseudo_queries
from nci.retrieval.bm25 import BM25Retriever, build_bm25


def success(retriever: BM25Retriever, queries: list[str], relevant: list[set[str]], ks=(1, 10)) -> dict:
    """Share of queries with a relevant document in the top k, for each k."""
    hits = retriever.search(queries, k=max(ks))
    out = {"queries": len(queries)}
    for k in ks:
        found = sum(1 for h, rel in zip(hits, relevant, strict=True) if any(hit[0] in rel for hit in h[:k]))
        out[f"success@{k}"] = found / len(queries) if queries else float("nan")
    return out


def load_pairs(path: Path) -> list[dict[str, str]]:
    if path.is_dir():
        return read_pseudo_queries(path)
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="directory written by `nci data prepare`")
    parser.add_argument("--queries", nargs="*", default=[], metavar="NAME=PATH", help="pseudo-query sets")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    import bm25s

    corpus = load_corpus(args.data)
    doc_ids = list(corpus)
    with tempfile.TemporaryDirectory() as tmp:
        build_bm25([document_text(corpus[d]) for d in doc_ids], Path(tmp) / "bm25")
        retriever = BM25Retriever("bm25", bm25s.BM25.load(str(Path(tmp) / "bm25")), doc_ids)

    rows: dict[str, dict] = {}
    for item in args.queries:
        name, _, path = item.partition("=")
        if not path:
            parser.error(f"--queries {item!r}: expected NAME=PATH")
        path = Path(path)
        if path.is_dir() and not (path / PSEUDO_QUERIES).is_file():
            parser.error(f"{path}: no {PSEUDO_QUERIES} here")
        pairs = load_pairs(path)
        rows[name] = success(retriever, [p["text"] for p in pairs], [{p["doc_id"]} for p in pairs])
    for split in ("test", "train"):
        qrels = load_qrels(args.data, split)
        queries = split_queries(args.data, split)
        if qrels:
            ids = [q for q in queries if q in qrels]
            rel = [{d for d, g in qrels[q].items() if g > 0} for q in ids]
            rows[f"real {split} questions"] = success(retriever, [queries[q] for q in ids], rel)

    print(f"BM25 self-retrieval over {len(doc_ids)} documents ({args.data})\n")
    print("| queries | count | success@1 | success@10 |")
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['queries']:,} | {r['success@1']:.3f} | {r['success@10']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"data": str(args.data), "bm25_self_retrieval": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
