"""Rank-voting ensembles of NCI models over one corpus (``--ensemble INDEX...``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nci.manifest import ArtifactError
from nci.retrieval.hits import Hits, rank_vote
from nci.retrieval.index import Index
from nci.retrieval.registry import Retriever


@dataclass
class EnsembleRetriever:
    """Several NCI models, typically trained on id variants (``nci ids build --seed S``) of one
    corpus, each in its own index directory; their rankings are fused by :func:`rank_vote`."""

    name: str
    members: list[Retriever]

    def search(self, queries: list[str], k: int) -> list[Hits]:
        if not queries:
            return []
        per_member = [m.search(queries, k) for m in self.members]
        return [rank_vote([rankings[i] for rankings in per_member], k) for i in range(len(queries))]


def add_ensemble_argument(p: Any, note: str = "") -> None:
    """The ``--ensemble INDEX...`` flag of ``nci evaluate`` and ``nci search``."""
    p.add_argument(
        "--ensemble",
        type=Path,
        nargs="+",
        default=None,
        metavar="INDEX",
        help="nci only: more index directories (other id variants of the same corpus) whose NCI "
        "rankings are fused with --index's by rank voting" + note,
    )


def ensemble(indexes: Sequence[Index], beam: int = 10) -> EnsembleRetriever:
    """An :class:`EnsembleRetriever` over the NCI models of ``indexes`` (same documents)."""
    if len(indexes) < 2:
        raise ValueError("an ensemble needs at least two index directories")
    first = set(indexes[0].doc_ids)
    for other in indexes[1:]:
        if set(other.doc_ids) != first:
            raise ArtifactError(f"{other.path}: holds other documents than {indexes[0].path}")
    members: list[Retriever] = [ix.retriever("nci", beam=beam) for ix in indexes]
    return EnsembleRetriever(f"nci-ensemble{len(members)}-beam{beam}", members)
