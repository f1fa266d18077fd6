"""Where top-1 errors part from the right document in the id tree, and where NCI's are decided.

For every judged query whose top hit is not relevant, the length of the id prefix that hit shares
with the nearest relevant document: 0 is another top-level cluster, the id's length less one a
sibling under the same parent (most SQuAD errors of every method land in the right article; this
says how far apart its paragraphs sit in the tree). For NCI it also scores both ids by teacher
forcing, with the per-step log-probabilities the beam search sums, and counts the errors whose
relevant id was already behind at the first digit where the two differ: a wrong turn the step's
own classifier made, which cross-entropy over the ids trains directly. The others (behind only
after a later, more confident step of the wrong subtree) are what sequence-level ranking losses
over beam candidates (LTRGR, RIPOR) address.

    python scripts/error_depth.py --index INDEX_DIR --data DATA_DIR [--methods nci,bm25] \
        [--split validation]

``validation`` (the default) scores the training queries the index's ``nci train`` held out;
any qrels split name (``test``) scores that split.
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading digits ids ``a`` and ``b`` share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def step_log_probs(model: Any, trie: Any, text: str, paths: Sequence[Sequence[int]]) -> list[list[float]]:
    """For each id in ``paths``, the log-probability of each of its digits for query ``text`` (one
    encoding, one teacher-forced pass), renormalised over the digits that exist under its prefix
    in ``trie`` (``nci.trie.Trie``): the terms the trie-constrained beam search adds up (END, the
    only choice at a leaf, adds 0)."""
    from nci.model import choice_labels
    from nci.semantic_ids import ids_to_tokens
    from nci.train.data import target_nodes

    child = np.asarray(trie.child)
    k, n_positions = model.config.k, model.config.n_positions
    batch = model.tokenize([text])
    memory, mask = model.encode(batch["input_ids"], batch["attention_mask"])
    n = len(paths)
    tokens = torch.as_tensor(ids_to_tokens(paths, k, n_positions - 1))
    nodes = torch.as_tensor(target_nodes(trie, paths, n_positions)) if model.config.centroid_prior else None
    with torch.inference_mode():
        logits = model(memory.expand(n, -1, -1), mask.expand(n, -1), tokens, nodes).float()
    labels = choice_labels(tokens, k)
    out = []
    for row, path in enumerate(paths):
        steps, node = [], 0
        for t, digit in enumerate(path):
            scores = logits[row, t, :k].masked_fill(torch.as_tensor(child[node] < 0), float("-inf"))
            steps.append(float(torch.log_softmax(scores, -1)[labels[row, t]]))
            node = int(child[node, digit])
        out.append(steps)
    return out


def top_errors(
    hits: list[list[Any]], qids: list[str], qrels: dict[str, dict[str, int]], ids: dict[str, tuple[int, ...]]
) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """``(query id, top hit's id, nearest relevant id)`` of each query whose top hit is wrong."""
    out = []
    for qid, ranked in zip(qids, hits, strict=True):
        relevant = [d for d, grade in qrels[qid].items() if grade > 0 and d in ids]
        if not ranked or not relevant or ranked[0].doc_id in relevant:
            continue
        top = ids[ranked[0].doc_id]
        out.append((qid, top, max((ids[d] for d in relevant), key=lambda r: shared_prefix(r, top))))
    return out


def main(argv: list[str] | None = None) -> int:
    from nci.data import load_qrels, split_queries
    from nci.evaluate import judged_queries
    from nci.fusion import validation_queries
    from nci.model import NCIModel
    from nci.retrieval import load_index, search_batched
    from nci.semantic_ids import load_semantic_ids

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=Path, required=True, help="index directory (nci index build)")
    p.add_argument("--data", type=Path, required=True, help="the dataset the index was built from")
    p.add_argument("--methods", default="nci,bm25", help="comma-separated methods (nci at beam 10)")
    p.add_argument(
        "--split", default="validation", help="validation (held-out training queries) or a qrels split"
    )
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    index = load_index(args.index)
    if args.split == "validation":
        _, queries, qrels = validation_queries(args.data, index)
    else:
        qrels, queries = load_qrels(args.data, args.split), split_queries(args.data, args.split)
    qids = judged_queries(qrels)
    sem = load_semantic_ids(args.index / "ids")
    ids = dict(zip(sem.doc_ids, (tuple(i) for i in sem.ids), strict=True))
    depth = max(len(i) for i in ids.values())
    print(f"{len(qids)} {args.split} queries; ids up to {depth} digits\n")
    print("| method | top-1 errors | " + " | ".join(f"sharing {n} digits" for n in range(depth)) + " |")
    print("|---|---:|" + "---:|" * depth)
    nci_errors, nci_counts = None, None
    for method in args.methods.split(","):
        opts = {"beam": 10} if method == "nci" else {}
        hits = search_batched(index.retriever(method, **opts), [queries[q] for q in qids], 10)
        errors = top_errors(hits, qids, qrels, ids)
        counts = collections.Counter(shared_prefix(top, rel) for _, top, rel in errors)
        print(f"| {method} | {len(errors)} | " + " | ".join(str(counts[n]) for n in range(depth)) + " |")
        if method == "nci":
            nci_errors, nci_counts = errors, counts
    if nci_errors:
        model = NCIModel.from_pretrained(args.index / "model").eval()
        at_split = collections.Counter()
        for qid, top, rel in nci_errors:
            n = shared_prefix(top, rel)
            wrong, right = step_log_probs(model, sem.trie, queries[qid], [top, rel])
            at_split[n] += right[n] < wrong[n]
        print("\nNCI errors whose relevant id was behind at the first differing digit, by digits shared:")
        for n in range(depth):
            if nci_counts[n]:
                print(f"- {n}: {at_split[n]} of {nci_counts[n]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
