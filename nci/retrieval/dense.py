"""Dense baselines: ``dense`` (exact inner product) and ``pq`` (Bolt-style 4-bit PQ fast-scan).

- ``dense``: exact inner product over the BERT document vectors (FAISS ``IndexFlatIP``).
- ``pq``: 4-bit product quantization scanned with SIMD lookup tables (FAISS ``PQ{M}x4fs``, the
  idea of Bolt, Blalock & Guttag, KDD 2017, whose own wrapper no longer builds), optionally
  re-ranking ``k * rerank`` candidates with the exact vectors.

Queries are encoded with the same BERT, pooling and length limit that embedded the documents, so
timings include the encoder. The FAISS indexes never change after the build. Deletions mark
their rows dead and searches skip dead rows, without ``remove_ids``: on the fast-scan index,
vectors added after a ``remove_ids`` can get the wrong codes (FAISS 1.x; a document added after a
deletion was not found for its own vector), and rows that never move keep a server and a replay
of its journal in the same order. Documents added live are kept beside the index and merged by
exact inner product: for ``pq`` because the codebooks were trained on the built corpus and
quantise vectors off its topics badly (an added document ranked 179th for its own text), and for
both because appending to a large flat index reallocates and copies it (one addition to a
million-vector index took 1.8 to 4.3 s when it did).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nci.retrieval.hits import Hit, Hits, hits_from_arrays
from nci.retrieval.index import EMBEDDINGS
from nci.retrieval.registry import BuildContext, LiveDocument, LoadContext, Method, Option, register

log = logging.getLogger(__name__)

DENSE = "dense.faiss"
PQ = "pq.faiss"
# 4-bit PQ trains 16 centroids per sub-quantizer; k-means needs at least that many points.
PQ_MIN_DOCS = 16


def default_pq_m(dim: int) -> int:
    """The largest divisor of ``dim`` that is at most ``dim // 4`` (at least 1)."""
    for m in range(max(dim // 4, 1), 0, -1):
        if dim % m == 0:
            return m
    return 1


@dataclass
class FaissRetriever:
    """Dense retrieval: encode queries, search a FAISS inner-product index.

    ``search(..., rerank=R)`` with ``R > 0`` (for compressed indexes) re-scores ``k * R``
    candidates with the exact document vectors (``vector(doc_id)``).
    """

    name: str
    index: Any
    doc_ids: list[str]  # FAISS row -> doc id
    encoder: Any  # nci.retrieval.encoder.QueryEncoder
    vector: Any = None  # doc id -> exact vector, for re-ranking
    rows: list[str] = field(init=False)  # FAISS row -> doc id, dead rows included
    dead: set[int] = field(init=False, default_factory=set)  # rows of deleted documents
    live_rows: dict[str, int] = field(init=False)  # doc id -> its live row
    added: dict[str, np.ndarray] = field(init=False, default_factory=dict)  # scored beside the index
    _added_matrix: tuple[list[str], np.ndarray] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.rows = list(self.doc_ids)
        self.live_rows = {d: i for i, d in enumerate(self.rows)}

    def search(self, queries: list[str], k: int, rerank: int = 0) -> list[Hits]:
        if not queries:
            return []
        return self.search_vectors(self.encoder.encode(queries), k, rerank)

    def search_vectors(self, vecs: np.ndarray, k: int, rerank: int = 0) -> list[Hits]:
        results = self._search_index(vecs, k, rerank)
        if not self.added:
            return results
        if self._added_matrix is None:
            ids = list(self.added)
            self._added_matrix = (ids, np.stack([self.added[d] for d in ids]))
        ids, matrix = self._added_matrix
        exact = vecs @ matrix.T  # [queries, added]
        merged = []
        for hits, row in zip(results, exact, strict=True):
            extra = [Hit(ids[j], float(row[j]), self.name) for j in np.argsort(-row, kind="stable")[:k]]
            merged.append(sorted(hits + extra, key=lambda h: -h.score)[:k])  # stable: index hits first
        return merged

    def _search_index(self, vecs: np.ndarray, k: int, rerank: int = 0) -> list[Hits]:
        k = min(k, self.index.ntotal - len(self.dead))
        if k <= 0:
            return [[] for _ in range(len(vecs))]
        if not rerank:
            scores, labels = self._search(vecs, k)
            return hits_from_arrays(self.rows, labels, scores, self.name)
        _, cand = self._search(vecs, min(k * rerank, self.index.ntotal - len(self.dead)))
        labels = np.full((len(vecs), k), -1, dtype=np.int64)
        scores = np.full((len(vecs), k), -np.inf, dtype=np.float32)
        for row, (c, v) in enumerate(zip(cand, vecs, strict=True)):
            c = c[c >= 0]
            exact = np.stack([self.vector(self.rows[i]) for i in c]) @ v if len(c) else np.zeros(0)
            order = np.argsort(-exact, kind="stable")[:k]
            labels[row, : len(order)] = c[order]
            scores[row, : len(order)] = exact[order]
        return hits_from_arrays(self.rows, labels, scores, self.name)

    def live_ids(self) -> list[str]:
        """The live documents in row order (then those scored beside the index)."""
        return [d for i, d in enumerate(self.rows) if i not in self.dead] + list(self.added)

    def _search(self, vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search for ``k`` live rows per query (dead rows skipped; -1 where fewer)."""
        if not self.dead:
            return self.index.search(vecs, k)
        scores, labels = self.index.search(vecs, min(k + len(self.dead), self.index.ntotal))
        keep = ~np.isin(labels, np.fromiter(self.dead, dtype=np.int64))
        out_s = np.full((len(vecs), k), -np.inf, dtype=np.float32)
        out_l = np.full((len(vecs), k), -1, dtype=np.int64)
        for i, row in enumerate(keep):
            s, lab = scores[i][row][:k], labels[i][row][:k]
            out_s[i, : len(s)], out_l[i, : len(lab)] = s, lab
        return out_s, out_l

    def add(self, documents: Sequence[LiveDocument]) -> None:
        for d in documents:
            self.added[d.doc_id] = np.asarray(d.vector, dtype=np.float32)
        self._added_matrix = None

    def remove(self, doc_ids: Sequence[str]) -> None:
        for doc_id in doc_ids:
            if self.added.pop(doc_id, None) is None:
                self.dead.add(self.live_rows.pop(doc_id))
            else:
                self._added_matrix = None


# --- building -------------------------------------------------------------------------------


def build_faiss(embeddings: np.ndarray, pq_m: int) -> tuple[Any, Any]:
    """An exact ``IndexFlatIP`` and a trained ``PQ{pq_m}x4fs`` inner-product index."""
    return build_flat(embeddings), build_pq(embeddings, pq_m)


def build_flat(embeddings: np.ndarray) -> Any:
    import faiss

    flat = faiss.IndexFlatIP(embeddings.shape[1])
    flat.add(embeddings)
    return flat


def build_pq(embeddings: np.ndarray, pq_m: int) -> Any:
    """A trained ``PQ{pq_m}x4fs`` inner-product index, or None below :data:`PQ_MIN_DOCS`."""
    import faiss

    if len(embeddings) < PQ_MIN_DOCS:
        return None
    pq = faiss.index_factory(embeddings.shape[1], f"PQ{pq_m}x4fs", faiss.METRIC_INNER_PRODUCT)
    if len(embeddings) < 39 * 16:
        log.warning(
            "PQ trained on only %d vectors (FAISS suggests >= 624); its codebooks are rough", len(embeddings)
        )
    # Silence FAISS's own per-sub-quantizer warning: one line above says it once.
    pq.pq.cp.min_points_per_centroid = 1
    pq.train(embeddings)
    pq.add(embeddings)
    return pq


def _build_dense(ctx: BuildContext) -> dict[str, Any]:
    import faiss

    log.info("FAISS: flat over %d x %d vectors", *ctx.vectors.shape)
    faiss.write_index(build_flat(ctx.vectors), str(ctx.out / DENSE))
    return {"files": [DENSE, ctx.encoder_dir], "factory": "Flat", "metric": "inner_product"}


def _build_pq(ctx: BuildContext) -> dict[str, Any]:
    import faiss

    pq_m = ctx.config.pq_m or default_pq_m(ctx.vectors.shape[1])
    log.info("FAISS: PQ%dx4fs over %d x %d vectors", pq_m, *ctx.vectors.shape)
    pq = build_pq(ctx.vectors, pq_m)
    if pq is None:
        return {
            "unavailable": f"the corpus has {len(ctx.doc_ids)} documents; 4-bit PQ needs >= {PQ_MIN_DOCS}"
        }
    faiss.write_index(pq, str(ctx.out / PQ))
    return {
        "files": [PQ, ctx.encoder_dir],
        "factory": f"PQ{pq_m}x4fs",
        "metric": "inner_product",
        "bytes_per_vector": pq_m // 2,
    }


def _loader(name: str, file: str) -> Any:
    def load(ctx: LoadContext) -> FaissRetriever:
        index = ctx.index.read_faiss(file)
        return FaissRetriever(name, index, ctx.index.doc_ids, ctx.index.query_encoder, ctx.corpus.vector)

    return load


register(
    Method(
        name="dense",
        summary="exact inner product over the BERT document vectors (FAISS IndexFlatIP)",
        load=_loader("dense", DENSE),
        build=_build_dense,
        score="inner product of the query and document vectors",
    )
)
register(
    Method(
        name="pq",
        summary="4-bit product quantization, FAISS fast-scan (Bolt-style)",
        load=_loader("pq", PQ),
        build=_build_pq,
        options=(
            Option("rerank", int, 0, "re-rank k*rerank candidates with the exact vectors (0 = off)", 0),
        ),
        score="approximate inner product (exact with rerank)",
        extra_files=lambda opts: [EMBEDDINGS] if opts.get("rerank") else [],
        bench=lambda cfg: (
            [("pq", {})]
            + ([(f"pq-rerank{cfg.pq_rerank}", {"rerank": cfg.pq_rerank})] if cfg.pq_rerank else [])
        ),
        label=lambda opts: f"pq+rerank{opts['rerank']}" if opts.get("rerank") else "pq",
    )
)
