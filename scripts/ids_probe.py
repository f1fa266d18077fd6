"""Which id tree suits a corpus? Search it with the untrained centroid-prior model.

For each (k, leaf size), build the semantic ids of the embeddings in memory, build an NCI model
with the centroid prior (``nci train --centroid-prior``) and no training, and run the
trie-constrained beam search on a seeded sample of the dataset's questions. Untrained, the model
descends the tree like a hierarchical dense search: at each node it scores the children's
centroids against the mean-pooled query. So the figures say how much the tree alone loses
against flat dense search, before any training, and probe training questions by default: the
choice of ids need not look at test questions.

    python scripts/ids_probe.py --data DATA_DIR --embeddings EMB_DIR \\
        --k 10 30 50 100 [--split train] [--queries 1000] [--beam 10] [--encoder DIR]

Each ``--k`` uses leaves of up to k documents. Prints a markdown table: success@1 and @10 of the
prior-only search and of flat dense search over the same embeddings and query vectors.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from nci.data import load_qrels, split_queries
from nci.decoding import ConstrainedDecoder
from nci.encoder import pool
from nci.model_build import build_model
from nci.semantic_ids import IdsConfig, SemanticIds, build_semantic_ids, node_centroids
from nci.train import TrainConfig
from nci.trie import Trie


def probe(
    embeddings: np.ndarray,
    doc_ids: list[str],
    questions: list[str],
    relevant: list[set[int]],
    k: int,
    beam: int,
    model_config: TrainConfig | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Success@1/@10 of the prior-only search over (k, leaf size k) ids and of flat dense search.
    ``model_config`` sets the encoder and decoder shape (default: TrainConfig's)."""
    config = IdsConfig(k=k, leaf_size=k)
    ids = build_semantic_ids(embeddings, config)
    trie = Trie.build(ids, k)
    sem = SemanticIds(
        doc_ids=doc_ids,
        ids=ids,
        k=k,
        max_depth=trie.max_depth,
        trie=trie,
        centroids=node_centroids(trie, embeddings),
        config=config,
    )
    model_config = replace(model_config or TrainConfig(), centroid_prior=True, encoder_trainable_layers=0)
    torch.manual_seed(model_config.seed)  # the untrained decoder's weights: same figures every run
    model = build_model(model_config, sem).eval()
    decoder = ConstrainedDecoder(model, sem.trie)
    hits = {"nci@1": 0, "nci@10": 0, "dense@1": 0, "dense@10": 0}
    for start in range(0, len(questions), batch_size):
        batch = model.tokenize(questions[start : start + batch_size])
        with torch.no_grad():
            memory, mask = model.encode(batch["input_ids"], batch["attention_mask"])
            docs, _ = decoder(memory, mask, beam)
        dense = np.argsort(-(pool(memory, mask).numpy() @ embeddings.T), axis=1)[:, :10]
        for row, gold in enumerate(relevant[start : start + batch_size]):
            ranked = docs[row].tolist()
            hits["nci@1"] += ranked[0] in gold
            hits["nci@10"] += bool(gold & set(ranked[:10]))
            hits["dense@1"] += dense[row, 0] in gold
            hits["dense@10"] += bool(gold & set(dense[row].tolist()))
    result = {name: count / len(questions) for name, count in hits.items()}
    result["max_depth"] = trie.max_depth
    result["trie_nodes"] = trie.n_nodes
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="prepared dataset (BEIR layout)")
    p.add_argument("--embeddings", type=Path, required=True, help="directory written by `nci embed`")
    p.add_argument("--k", type=int, nargs="+", default=[10, 30, 50], help="clusters per level to try")
    p.add_argument("--split", default="train", help="qrels split whose questions are probed (default train)")
    p.add_argument("--queries", type=int, default=1000, help="seeded sample size (default 1000)")
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encoder", default=None, help="encoder directory (default: the packaged MiniLM)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if any(k < 2 for k in args.k):
        p.error("--k values must be at least 2")

    embeddings = np.load(args.embeddings / "embeddings.npy")
    doc_ids = (args.embeddings / "doc_ids.txt").read_text().splitlines()
    row = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    queries = split_queries(args.data, args.split)
    qrels = load_qrels(args.data, args.split)
    qids = sorted(q for q in queries if any(g > 0 and d in row for d, g in qrels.get(q, {}).items()))
    if not qids:
        p.error(f"{args.data}: no judged questions in split '{args.split}'")
    qids = random.Random(args.seed).sample(qids, min(args.queries, len(qids)))
    questions = [queries[q] for q in qids]
    relevant = [{row[d] for d, g in qrels[q].items() if g > 0 and d in row} for q in qids]

    print(f"{len(qids)} {args.split} questions, beam {args.beam}, untrained centroid-prior model\n")
    print(
        "| k | leaf size | depth | trie nodes | prior s@1 | prior s@10 | flat dense s@1 | flat dense s@10 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for k in args.k:
        r = probe(embeddings, doc_ids, questions, relevant, k, args.beam, TrainConfig(encoder=args.encoder))
        print(
            f"| {k} | {k} | {r['max_depth']} | {r['trie_nodes']} | {r['nci@1']:.3f} | {r['nci@10']:.3f} "
            f"| {r['dense@1']:.3f} | {r['dense@10']:.3f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
