"""The one hit type every method returns, the default-beam rule, and rank fusion helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

# The beam NCI searches with when a caller names none: at least this wide, and never narrower
# than k (NCI returns at most `beam` documents). The service caps it at its max_beam setting.
DEFAULT_BEAM = 10


def resolve_beam(k: int, beam: int | None = None, default: int = DEFAULT_BEAM) -> int:
    """The one default-beam rule: ``beam`` when given, else ``max(k, default)``."""
    if beam is not None:
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        return int(beam)
    return max(int(k), int(default))


class Hit(NamedTuple):
    """One ranked result: document id, the method's score, and which ranking found it (the
    method's name, or ``"dense"`` for NCI's dense fallback over documents added since training)."""

    doc_id: str
    score: float
    source: str


Hits = list[Hit]


def hits_from_arrays(
    doc_ids: Sequence[str], labels: np.ndarray, scores: np.ndarray, source: str
) -> list[Hits]:
    """FAISS-style ``(labels, scores)`` arrays to hit lists; -1 labels (no result) are dropped."""
    new = tuple.__new__  # Hit(...) would parse its arguments in Python, doubling this loop's cost
    return [
        [new(Hit, (doc_ids[i], s, source)) for i, s in zip(row_i, row_s, strict=True) if i >= 0]
        for row_i, row_s in zip(labels.tolist(), scores.tolist(), strict=True)
    ]


def rank_vote(rankings: Sequence[Hits], k: int, source: str = "nci") -> Hits:
    """Fuse rankings by the NCI paper's rank voting: a document at rank ``r`` (1-based) of a
    ranking gets ``1 / (r / 5 + 1)`` votes; votes add up over rankings; best ``k`` first (ties by
    first appearance)."""
    votes: dict[str, float] = {}
    for hits in rankings:
        for r, hit in enumerate(hits, 1):  # (doc id, score, ...) tuples
            votes[hit[0]] = votes.get(hit[0], 0.0) + 1.0 / (r / 5 + 1)
    ranked = sorted(votes.items(), key=lambda v: -v[1])[:k]
    return [Hit(d, s, source) for d, s in ranked]


def merge_fallback(
    hits: Hits, hit_sims: Sequence[float], fallback: Sequence[tuple[str, float]], k: int
) -> Hits:
    """Place dense-fallback documents in an NCI ranking where dense retrieval would put them.

    ``hits`` is NCI's ranking and ``hit_sims`` the dense similarity of each of its documents to the
    query; each fallback document ``(id, similarity)`` goes before the first NCI hit with a lower
    similarity. It takes the score of the NCI hit before it (or the first hit's score), so scores
    stay non-increasing down the list; with no NCI hits at all it keeps its similarity.
    """
    ordered = sorted(fallback, key=lambda f: -f[1])
    out: Hits = []
    j = 0
    for hit, sim in zip(hits, hit_sims, strict=True):
        while j < len(ordered) and ordered[j][1] > sim:
            score = out[-1].score if out else hit.score
            out.append(Hit(ordered[j][0], score, "dense"))
            j += 1
        out.append(hit)
    for doc_id, sim in ordered[j:]:
        out.append(Hit(doc_id, out[-1].score if out else sim, "dense"))
    return out[:k]
