"""A prepared dataset as if it had no queries, with the judgements it hides kept aside.

Choices for corpora without training queries (the recipe's rules for them, the fusion rule of
:data:`nci.fusion.UNFITTED`) cannot be made on such a corpus's own judgements: those are its test.
They are made instead on a corpus that has training queries, built without them, and scored on
the training judgements the build never saw. This script writes that corpus:

    python scripts/zero_shot_copy.py --data DATA --out DIR [--queries N --documents M] [--seed 0]

- without ``--documents``: ``DIR/data`` is a copy of DATA with ``qrels/train.tsv`` and
  ``qrels/dev.tsv`` moved to ``DIR/heldout/`` (the test split stays, and stays unread by the
  choices: score on ``DIR/heldout/train.tsv``);
- with ``--queries N --documents M``: a cut the size of a small collection. N training queries
  (seeded), every document relevant to them, and other documents drawn at random up to M, written
  as a ``jsonl`` source (``DIR/src``) and prepared into ``DIR/data`` with no judgements at all;
  their judgements go to ``DIR/heldout/train.tsv``.

Then ``nci build --data DIR/data --out DIR/build --no-compare`` and, for instance,
``python scripts/fusion_variants.py --index DIR/build/index --data DIR/data --qrels
DIR/heldout/train.tsv``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

from nci.data import load_corpus, load_qrels, load_queries, prepare

HIDDEN = ("train", "dev")


def hide_queries(data: Path, out: Path) -> None:
    """``out/data``: a copy of ``data`` without its train and dev judgements (moved to ``out/heldout``)."""
    shutil.copytree(data, out / "data")
    (out / "heldout").mkdir(parents=True)
    for split in HIDDEN:
        path = out / "data" / "qrels" / f"{split}.tsv"
        if path.is_file():
            shutil.move(path, out / "heldout" / path.name)


def cut(data: Path, out: Path, n_queries: int, n_documents: int, seed: int) -> tuple[int, int]:
    """``out/src`` and ``out/data``: ``n_queries`` training queries' relevant documents plus random
    others up to ``n_documents``, without judgements; returns (documents, queries)."""
    qrels = {q: {d for d, g in rels.items() if g > 0} for q, rels in load_qrels(data, "train").items()}
    qrels = {q: docs for q, docs in qrels.items() if docs}
    if len(qrels) < n_queries:
        raise SystemExit(f"{data}: {len(qrels)} judged training queries, fewer than --queries {n_queries}")
    rng = random.Random(seed)
    qids = sorted(qrels)
    rng.shuffle(qids)
    qids = sorted(qids[:n_queries])
    keep = set().union(*(qrels[q] for q in qids))
    corpus = load_corpus(data)
    others = [d for d in corpus if d not in keep]
    rng.shuffle(others)
    keep |= set(others[: max(0, n_documents - len(keep))])
    queries = load_queries(data)
    (out / "src").mkdir(parents=True)
    (out / "heldout").mkdir()
    with open(out / "src" / "corpus.jsonl", "w") as f:
        for doc_id, doc in corpus.items():
            if doc_id in keep:
                f.write(json.dumps({"_id": doc_id, **doc}) + "\n")
    with open(out / "src" / "queries.jsonl", "w") as f:
        for q in qids:
            f.write(json.dumps({"_id": q, "text": queries[q]}) + "\n")
    with open(out / "heldout" / "train.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in qids:
            for d in sorted(qrels[q]):
                f.write(f"{q}\t{d}\t1\n")
    prepare("jsonl", out / "data", src=out / "src")
    return len(keep), len(qids)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a prepared dataset with training queries")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--queries", type=int, help="training queries to keep judgements of (with --documents)")
    p.add_argument("--documents", type=int, help="cut the corpus to this many documents")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if (args.queries is None) != (args.documents is None):
        p.error("--queries and --documents go together")
    if args.out.exists():
        p.error(f"{args.out} exists; choose a new folder")
    if args.documents is None:
        hide_queries(args.data, args.out)
        print(
            f"{args.out}/data: {args.data} without its {' and '.join(HIDDEN)} judgements ({args.out}/heldout)"
        )
    else:
        docs, queries = cut(args.data, args.out, args.queries, args.documents, args.seed)
        print(f"{args.out}/data: {docs} documents, {queries} queries judged in {args.out}/heldout/train.tsv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
