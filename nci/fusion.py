"""Fitting the ``fusion`` method: its combination and weights, on validation queries only.

``nci index build ... --fusion DATA`` calls :func:`fit_fusion` on the index it just wrote. The
validation queries are, in order of preference: the data's ``dev`` split; else the training
queries that ``nci train`` held out for the index's model (the same seeded split, so no query the
model learned from); else none, and the method gets the fixed rule :data:`UNFITTED`, recorded
as not fitted. The test split is never read.

The search is a grid: every combination (``rrf``, ``score``, ``zscore``) and the weights of NCI
and dense from {0, 0.25, 0.5, 1, 2, 4} beside the lexical anchor's 1 (only ratios matter); the first
best nDCG@10 wins. Where the index has the optional parts, the sentence methods (dense-sentences,
bm25-sentences) and the other lexical part, their weights are then searched on the same grid group
by group with the rest fixed, then NCI's and dense's again, for :data:`ROUNDS` rounds (each step
keeps the weights before it unless it finds a better score). The anchor is BM25; where the index
has bm25-expanded the whole search runs again with it as the anchor (BM25 then one of the optional
parts), and the better of the two fits wins (a tie keeps BM25): the two lexical parts rank much
alike, so adding one to weights fitted around the other overweights lexical matching, and a step
that varies one weight at a time does not find the fit around the other. Each part runs once on
the validation queries; the grid only re-fuses their lists. Without validation queries no weight
is fitted and bm25-expanded, measured only with fitted weights, is left out.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from nci.retrieval.fusion import (
    COMBINATIONS,
    EXPANDED_PARTS,
    FUSION,
    OPTIONAL_PARTS,
    PARTS,
    SENTENCE_PARTS,
    FusionConfig,
    fuse,
)

log = logging.getLogger(__name__)

GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
# rounds of the search over the optional parts' weights, then NCI's and dense's again
ROUNDS = 2
METRIC = "ndcg@10"
# The rule for a corpus without validation queries, chosen on two corpora built as if they had no
# queries (`nci build` at its defaults), scored on judged queries those builds never saw, by mean
# nDCG@10 over the fixed rules of scripts/fusion_variants.py: SQuAD (1,000 of its training
# questions) and a 1,500-abstract cut of SciFact (400 training claims). zscore with NCI at half
# weight 0.869 (0.909 / 0.828); without NCI 0.868 (0.910 / 0.826); equal weights 0.864; the best
# min-max rule 0.864; equal reciprocal-rank fusion, the rule before it, 0.815 (0.849 / 0.781),
# below BM25 alone (0.827). Adding dense-sentences and bm25-sentences at weight 1 where the index
# has them: SciFact cut 0.828 -> 0.835 (without NCI 0.826 -> 0.836), SQuAD without NCI 0.910 ->
# 0.926 (that proxy's NCI model was not kept). Cranfield's judgements chose nothing.
UNFITTED = FusionConfig(
    "zscore",
    {"nci": 0.5, "dense": 1.0, "bm25": 1.0, "dense-sentences": 1.0, "bm25-sentences": 1.0},
)


def validation_queries(data: Path, index: Any) -> tuple[str, dict[str, str], dict[str, dict[str, int]]]:
    """(where they come from, qid -> text, qrels) of the validation queries; empty when none."""
    from nci.data import load_qrels, split_queries

    if (Path(data) / "qrels" / "dev.tsv").is_file():
        return "the dev split", split_queries(data, "dev"), load_qrels(data, "dev")
    from nci.train.data import read_train_config, validation_query_ids

    cfg = read_train_config(index.path / "model")
    if cfg is not None and (Path(data) / "qrels" / "train.tsv").is_file():
        qids = validation_query_ids(data, index.semantic_ids().doc_ids, cfg)
        queries, qrels = split_queries(data, "train"), load_qrels(data, "train")
        return (
            "the training queries nci train held out",
            {q: queries[q] for q in qids},
            {q: qrels[q] for q in qids},
        )
    return "", {}, {}


def fusion_parts(index: Any) -> tuple[str, ...]:
    """The parts a fusion over ``index`` combines: NCI, dense and BM25, and the sentence methods
    and bm25-expanded where the index has them."""
    available = index.methods()
    return PARTS + tuple(p for p in OPTIONAL_PARTS if p in available and not available[p])


def fit_fusion(index_dir: Path, data: Path, beam: int = 10, depth: int = 100) -> dict[str, Any]:
    """Fit the fusion on the index at ``index_dir``, write ``fusion.json`` there; returns the
    manifest entry of the method."""
    from nci.retrieval import Searcher, load_index, search_batched

    index = load_index(index_dir)
    missing = [m for m in PARTS if index.methods().get(m)]
    if missing:
        return {"unavailable": f"needs {' and '.join(missing)}"}
    parts = fusion_parts(index)
    where, queries, qrels = validation_queries(data, index)
    if not queries:
        weights = {p: w for p, w in UNFITTED.weights.items() if p in parts}
        config = replace(UNFITTED, weights=weights, depth=depth, beam=beam)
        fitted = {
            "fitted": False,
            "why": "no validation queries (no dev split, no held-out training queries)",
        }
    else:
        excluded = {}
        if "bm25-expanded" in parts:
            from nci.retrieval.expanded import overlap

            why = overlap(index.path, queries)
            if why:
                log.warning("fusion leaves out bm25-expanded: %s", why)
                excluded["bm25-expanded"] = why
                parts = tuple(p for p in parts if p not in excluded)
        searcher = Searcher(index)
        qids, texts = list(queries), [queries[q] for q in queries]
        per_part = {
            part: search_batched(
                searcher.retriever(part, **({"beam": beam} if part == "nci" else {})),
                texts,
                beam if part == "nci" else depth,
                progress=True,
            )
            for part in parts
        }
        config, score, table = fit_grid(per_part, qids, qrels, beam=beam, depth=depth)
        fitted = {
            "fitted": True,
            "on": where,
            "queries": len(qids),
            "metric": METRIC,
            "value": round(score, 4),
        }
        fitted["single"] = {p: round(table[p], 4) for p in parts}
        if excluded:
            fitted["excluded"] = excluded
        log.info(
            "fusion fitted on %d validation queries (%s): %s %s, %s %.4f",
            len(qids),
            where,
            config.combination,
            config.weights,
            METRIC,
            score,
        )
    info = {
        "combination": config.combination,
        "weights": config.weights,
        "depth": config.depth,
        "beam": config.beam,
        **fitted,
    }
    (Path(index_dir) / FUSION).write_text(json.dumps(info, indent=2) + "\n")
    return {"files": [FUSION], **info}


def fit_grid(
    per_part: dict[str, list],
    qids: list[str],
    qrels: dict[str, dict[str, int]],
    combinations: tuple[str, ...] = COMBINATIONS,
    beam: int = 10,
    depth: int = 100,
) -> tuple[FusionConfig, float, dict[str, float]]:
    """The best (combination, weights) on the queries ``qids`` (``per_part[p][i]``: part ``p``'s
    hits for ``qids[i]``), its nDCG@10, and each part's own."""
    from nci.evaluate import MEASURES, evaluate, ranked_run

    measure = {METRIC: MEASURES[METRIC]}
    parts = list(per_part)

    def score(config: FusionConfig) -> float:
        fused = [fuse({p: per_part[p][i] for p in parts}, config, 100) for i in range(len(qids))]
        return evaluate(ranked_run(qids, fused), qrels, measure)[METRIC]

    single = {p: evaluate(ranked_run(qids, per_part[p]), qrels, measure)[METRIC] for p in parts}

    def search(combinations, names: tuple[str, ...], weights: dict[str, float]) -> tuple[FusionConfig, float]:
        """The first best config that varies ``names`` on the grid (the rest as ``weights``)."""
        found, found_score = None, -1.0
        for combination, *values in itertools.product(combinations, *[GRID] * len(names)):
            chosen = {**weights, **dict(zip(names, values, strict=True))}
            config = FusionConfig(combination, chosen, depth, beam)
            value = score(config)
            if value > found_score:
                found, found_score = config, value
        assert found is not None
        return found, found_score

    best, best_score = None, -1.0
    anchors = ("bm25", *(p for p in EXPANDED_PARTS if p in per_part))
    sentences = tuple(p for p in SENTENCE_PARTS if p in per_part)
    for anchor in anchors:  # the lexical part at weight 1: BM25, or BM25 over expanded documents
        groups = ([sentences] if sentences else []) + [(p,) for p in anchors if p != anchor]
        start = {anchor: 1.0, **{p: 0.0 for g in groups for p in g}}
        current, current_score = search(combinations, ("nci", "dense"), start)
        for _ in range(ROUNDS if groups else 0):
            for group in (*groups, ("nci", "dense")):
                config, value = search((current.combination,), group, current.weights)
                if value > current_score:
                    current, current_score = config, value
        if current_score > best_score:  # ties keep the earlier anchor: plain BM25
            best, best_score = current, current_score
    assert best is not None
    return best, best_score, single
