"""``nci+dense``: NCI's beam re-scored with dense similarity.

Each document NCI returns gets ``log p_NCI(id | query) + weight * cos(query, document)``, with
the query embedded by the index's query encoder and the document's vector from the corpus. The
candidates are NCI's alone (at most ``beam``, dense fallback included); dense search adds none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nci.retrieval.hits import Hit, Hits, resolve_beam
from nci.retrieval.index import EMBEDDINGS
from nci.retrieval.registry import LoadContext, Method, Option, register

HYBRID_WEIGHT = 20.0  # weight of the cosine similarity beside the NCI log-probability


@dataclass
class HybridRetriever:
    name: str
    nci: Any  # the nci method's retriever
    encoder: Any  # nci.retrieval.encoder.QueryEncoder
    vector: Callable[[str], np.ndarray]  # doc id -> vector

    def search(
        self, queries: list[str], k: int, beam: int | None = None, weight: float = HYBRID_WEIGHT
    ) -> list[Hits]:
        if not queries:
            return []
        beam = resolve_beam(k, beam)
        beams = self.nci.search(queries, beam, beam=beam)
        vectors = self.encoder.encode(queries)
        out = []
        for q, hits in zip(vectors, beams, strict=True):
            if not hits:
                out.append([])
                continue
            cos = np.stack([self.vector(h.doc_id) for h in hits]) @ q
            scored = [
                Hit(h.doc_id, h.score + weight * float(c), self.name) for h, c in zip(hits, cos, strict=True)
            ]
            out.append(sorted(scored, key=lambda h: -h.score)[:k])
        return out


def _load(ctx: LoadContext) -> HybridRetriever:
    return HybridRetriever("nci+dense", ctx.component("nci"), ctx.index.query_encoder, ctx.corpus.vector)


register(
    Method(
        name="nci+dense",
        summary="NCI's beam re-scored with dense similarity",
        load=_load,
        needs=("nci", "dense"),
        options=(
            Option("beam", int, None, "beam size (default max(k, 10)); at most `beam` results", 1),
            Option("weight", float, HYBRID_WEIGHT, "weight of the cosine similarity", 0),
        ),
        score=f"log-probability + weight (default {HYBRID_WEIGHT:g}) x cosine",
        extra_files=lambda opts: [EMBEDDINGS],
        bench=lambda cfg: [("nci+dense", {"beam": cfg.beams[0], "weight": cfg.hybrid_weight})],
        label=lambda opts: f"nci+dense-beam{opts['beam']}" if opts.get("beam") else "nci+dense",
    )
)
