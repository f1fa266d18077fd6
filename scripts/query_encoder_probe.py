"""How good a dense query encoder has NCI's training made the model's encoder?

Scores the index's validation queries (those ``nci index build --fusion`` fits on: the dev split,
else the training queries ``nci train`` held out) by the cosine of the model's pooled query (the
vector its centroid prior uses) and each document's embedding in the index, and prints success@1
and @10. With trainable encoder layers, the training moves that vector; ``--contrastive-weight``
trains it toward the document embeddings directly.

    python scripts/query_encoder_probe.py --index INDEX_DIR --data DATA_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from nci.evaluate import MEASURES, evaluate, ranked_run
    from nci.fusion import validation_queries
    from nci.model import NCIModel, pooled_query
    from nci.retrieval import Searcher, load_index

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=Path, required=True, help="index directory (nci index build)")
    p.add_argument("--data", type=Path, required=True, help="the dataset the index was built from")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    index = load_index(args.index)
    where, queries, qrels = validation_queries(args.data, index)
    if not queries:
        print(f"{args.index}: no validation queries (no dev split, no held-out ones)", file=sys.stderr)
        return 2
    model = NCIModel.from_pretrained(args.index / "model").eval()
    qids = list(queries)
    vectors = []
    for start in range(0, len(qids), args.batch_size):
        batch = model.tokenize([queries[q] for q in qids[start : start + args.batch_size]])
        memory, mask = model.encode(batch["input_ids"], batch["attention_mask"])
        vectors.append(pooled_query(memory, mask))
    # the dense method's exact search over the document embeddings, with the model's query vectors
    hits = Searcher(index).load("dense").search_vectors(torch.cat(vectors).numpy(), 10)
    measures = {m: MEASURES[m] for m in ("success@1", "success@10")}
    scores = evaluate(ranked_run(qids, hits), qrels, measures)
    print(
        f"{len(qids)} validation queries ({where}): pooled query success@1 {scores['success@1']:.3f} "
        f"@10 {scores['success@10']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
