"""``fusion``: NCI, dense and BM25 combined, with weights fitted on validation queries.

The parts are NCI, dense and BM25, and, where the index has them, dense-sentences and
bm25-sentences (each document by its best sentence: :mod:`nci.retrieval.sentences`) and
bm25-expanded (documents expanded with their training queries: :mod:`nci.retrieval.expanded`). Each part
ranks ``depth`` candidates (NCI: its beam); a document's fused score is

- ``rrf``: sum over parts of ``weight / (60 + rank)`` (reciprocal rank fusion, Cormack et al. 2009);
- ``score``: sum over parts of ``weight x`` its score min-max normalised over that part's list
  (0 for a document the part did not return);
- ``zscore``: sum over parts of ``weight x`` its score in standard deviations of that part's list
  above the list's lowest score (0 for a document the part did not return). Unlike min-max, one
  outlying top score does not squash the rest of the list towards 0.

Which combination and which weights: ``nci index build --fusion`` fits them on validation queries
(:mod:`nci.fusion`) and writes ``fusion.json`` into the index; this module only applies them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nci.manifest import ArtifactError
from nci.retrieval.hits import Hit, Hits, resolve_beam
from nci.retrieval.registry import BuildContext, LoadContext, Method, Option, register

FUSION = "fusion.json"
PARTS = ("nci", "dense", "bm25")  # the parts every fusion has
SENTENCE_PARTS = ("dense-sentences", "bm25-sentences")  # parts where the index has them
EXPANDED_PARTS = ("bm25-expanded",)  # where the index has it (a corpus with training queries)
OPTIONAL_PARTS = SENTENCE_PARTS + EXPANDED_PARTS
ALL_PARTS = PARTS + OPTIONAL_PARTS
RRF_K = 60
COMBINATIONS = ("rrf", "score", "zscore")


@dataclass(frozen=True)
class FusionConfig:
    combination: str = "rrf"  # one of COMBINATIONS
    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PARTS, 1.0))
    depth: int = 100  # candidates each part ranks (NCI: its beam, unless the request sets one)
    beam: int = 10

    def __post_init__(self) -> None:
        if self.combination not in COMBINATIONS:
            raise ValueError(f"combination must be one of {COMBINATIONS}, got {self.combination!r}")
        if set(self.weights) - set(ALL_PARTS):
            raise ValueError(f"weights name unknown parts: {sorted(set(self.weights) - set(ALL_PARTS))}")


def fuse(per_part: dict[str, Hits], config: FusionConfig, k: int, source: str = "fusion") -> Hits:
    """One query's fused ranking from each part's hits (ties: the order parts are listed)."""
    scores: dict[str, float] = {}
    for part, hits in per_part.items():
        weight = config.weights.get(part, 0.0)
        if not weight or not hits:
            continue
        if config.combination == "rrf":
            values = [weight / (RRF_K + rank) for rank in range(1, len(hits) + 1)]
        else:
            values = [weight * v for v in normalised([h.score for h in hits], config.combination)]
        for h, v in zip(hits, values, strict=True):
            scores[h.doc_id] = scores.get(h.doc_id, 0.0) + v
    ranked = sorted(scores.items(), key=lambda item: -item[1])[:k]
    return [Hit(doc_id, score, source) for doc_id, score in ranked]


def normalised(scores: list[float], combination: str) -> list[float]:
    """One part's scores over its own list, from 0 at its lowest: divided by the list's range
    (``score``) or by its standard deviation (``zscore``); all 1 when the scores are all equal."""
    bottom = min(scores)
    if combination == "score":
        scale = max(scores) - bottom
    else:
        mean = sum(scores) / len(scores)
        scale = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
    if not scale > 0:
        return [1.0] * len(scores)
    return [(s - bottom) / scale for s in scores]


@dataclass
class FusionRetriever:
    name: str
    parts: dict[str, Any]  # part name -> its retriever
    config: FusionConfig

    def search(self, queries: list[str], k: int, beam: int | None = None) -> list[Hits]:
        if not queries:
            return []
        depth = max(k, self.config.depth)
        results: dict[str, list[Hits]] = {}
        for part, retriever in self.parts.items():
            if part == "nci":
                b = resolve_beam(k, beam, default=self.config.beam)
                results[part] = retriever.search(queries, b, beam=b)
            else:
                results[part] = retriever.search(queries, depth)
        return [
            fuse({p: results[p][i] for p in self.parts}, self.config, k, self.name)
            for i in range(len(queries))
        ]


def read_config(path: Any) -> FusionConfig:
    try:
        info = json.loads(path.read_text())
        return FusionConfig(**{k: info[k] for k in ("combination", "weights", "depth", "beam") if k in info})
    except (OSError, ValueError, TypeError) as e:
        raise ArtifactError(f"{path}: unreadable fusion config ({e}); rebuild the index with --fusion") from e


def _build(ctx: BuildContext) -> dict[str, Any]:
    # Fitting needs the other methods built and loadable: nci index build --fusion does it after
    # the index is written (nci.fusion); until then the method is unavailable.
    return {"unavailable": "not fitted: build the index with --fusion DATA (validation queries)"}


def _load(ctx: LoadContext) -> FusionRetriever:
    config = read_config(ctx.index.path / FUSION)
    parts = {p: ctx.component(p) for p in ALL_PARTS if config.weights.get(p)}
    return FusionRetriever("fusion", parts, config)


register(
    Method(
        name="fusion",
        summary="NCI, dense and BM25 fused with weights fitted on validation queries",
        load=_load,
        build=_build,
        needs=PARTS,
        options=(Option("beam", int, None, "NCI's beam (default: the fitted one, at least k)", 1),),
        score="the fused score (weighted reciprocal ranks or normalised scores, as fitted)",
        extra_files=lambda opts: [FUSION],
        bench=lambda cfg: [("fusion", {})],
    )
)
