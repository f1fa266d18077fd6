"""The documents an index's retrievers rank now: the built ones, less deletions, plus additions.

A :class:`Corpus` is the live state every method shares: the document store, the vector of every
document (``embeddings.npy`` rows for built ones, the added ones in memory) and the semantic id
space (:class:`nci.retrieval.id_space.IdSpace`). Retrievers read it; only the searcher changes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np

from nci.manifest import ArtifactError
from nci.retrieval.errors import DocumentNotFound
from nci.retrieval.id_space import IdSpace
from nci.retrieval.index import Index
from nci.retrieval.registry import LiveDocument


class Corpus:
    def __init__(self, index: Index):
        self.index = index
        self.added: dict[str, np.ndarray] = {}  # added live documents -> vector
        self.deleted_built: set[str] = set()
        self.version = 0  # additions and deletions applied

    @cached_property
    def store(self) -> dict[str, dict[str, str]]:
        """doc id -> {"title", "text"} of every live document (read on first use)."""
        store = dict(self.index.documents)
        if set(store) != set(self.built_rows):
            raise ArtifactError(
                f"{self.index.path}: documents.jsonl and doc_ids.txt list different documents"
            )
        return store

    @cached_property
    def built_rows(self) -> dict[str, int]:
        return {doc_id: i for i, doc_id in enumerate(self.index.doc_ids)}

    @cached_property
    def dim(self) -> int:
        return int(self.index.manifest.get("counts", {}).get("dimension") or self.index.embeddings.shape[1])

    @cached_property
    def ids(self) -> IdSpace | None:
        """The semantic id space, when the index has ids (loaded on first use)."""
        if not (self.index.path / "ids").is_dir():
            return None
        depth_limit = None
        if not self.index.methods().get("nci"):
            depth_limit = int(self.index.model_config().get("max_depth") or 0) or None
        return IdSpace(self.index.semantic_ids(), depth_limit)

    @cached_property
    def trained(self) -> set[str]:
        """Documents the NCI model was trained on (none when the index has no model)."""
        if self.index.methods().get("nci") or self.ids is None:
            return set()
        return set(self.ids.sem_doc_ids)

    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self.store

    def vector(self, doc_id: str) -> np.ndarray:
        if doc_id in self.added:
            return self.added[doc_id]
        return np.asarray(self.index.embeddings[self.built_rows[doc_id]], dtype=np.float32)

    def text(self, doc_id: str) -> str:
        from nci.data import document_text

        return document_text(self.store[doc_id])

    def semantic_id(self, doc_id: str) -> tuple[int, ...] | None:
        return self.ids.path(doc_id) if self.ids is not None else None

    def get(self, doc_id: str) -> dict[str, Any]:
        doc = self.store.get(doc_id)
        if doc is None:
            raise DocumentNotFound(f"no document with id {doc_id!r}")
        sid = self.semantic_id(doc_id)
        return {
            "id": doc_id,
            "title": doc.get("title", ""),
            "text": doc.get("text", ""),
            "semantic_id": "-".join(map(str, sid)) if sid else None,
            "added": doc_id in self.added,
            "trained": doc_id in self.trained and doc_id not in self.added,
        }

    def add(self, documents: Sequence[LiveDocument]) -> None:
        for d in documents:
            if d.doc_id in self.store:
                raise ValueError(f"document {d.doc_id!r} is already live")
        for d in documents:
            self.store[d.doc_id] = {"title": d.title, "text": d.text}
            self.added[d.doc_id] = np.asarray(d.vector, dtype=np.float32)
            if self.ids is not None and d.sid is not None:
                self.ids.insert(d.doc_id, d.sid, self.added[d.doc_id])
        self.version += 1

    def remove(self, doc_id: str) -> None:
        if doc_id not in self.store:
            raise ValueError(f"document {doc_id!r} is not live")
        if self.ids is not None:
            self.ids.remove(doc_id, self.vector(doc_id))
        if doc_id in self.added:
            del self.added[doc_id]
        else:
            self.deleted_built.add(doc_id)
        del self.store[doc_id]
        self.version += 1

    def plan_ids(self, documents: Sequence[tuple[str, np.ndarray]]) -> list[tuple[int, ...]]:
        """Semantic ids for new documents, each planned as if the ones before it were in; the
        id space is left as it was (:meth:`IdSpace.trial`), so a failure (:class:`IdSpaceFull`)
        assigns nothing."""
        assert self.ids is not None
        if len(documents) == 1:
            return [self.ids.assign(documents[0][1])]
        sids = []
        with self.ids.trial() as space:
            for doc_id, vector in documents:
                sid = space.assign(vector)
                space.insert(doc_id, sid, vector)
                sids.append(sid)
        return sids
