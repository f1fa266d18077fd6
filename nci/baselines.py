"""The baselines NCI is compared with, behind the same retriever interface.

- ``dense``: exact inner product over the BERT document vectors (FAISS ``IndexFlatIP``).
- ``pq``: Bolt-style 4-bit product quantization scanned with SIMD lookup tables (FAISS
  ``PQ{M}x4fs``, the idea of Bolt, Blalock & Guttag, KDD 2017, whose own wrapper no longer builds),
  optionally re-ranking ``k * R`` candidates with the exact vectors.
- ``bm25``: BM25 (bm25s) with an English stemmer (PyStemmer) and English stopwords.

Dense methods encode queries with the same BERT, pooling and length limit that embedded the
documents, so their timings include the encoder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nci.retrieval import Hits, hits_from_arrays

log = logging.getLogger(__name__)

# 4-bit PQ trains 16 centroids per sub-quantizer; k-means needs at least that many points.
PQ_MIN_DOCS = 16


def default_pq_m(dim: int) -> int:
    """The largest divisor of ``dim`` that is at most ``dim // 4`` (at least 1)."""
    for m in range(max(dim // 4, 1), 0, -1):
        if dim % m == 0:
            return m
    return 1


class QueryEncoder:
    """The BERT that embedded the documents, used on queries (same pooling, L2-normalised)."""

    def __init__(self, path: Path, pooling: str = "mean", max_length: int = 256, batch_size: int = 64):
        from nci.encoder import load_encoder

        self.path = Path(path)
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self.tokenizer, self.model = load_encoder(self.path)
        self.model.eval()

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        from nci.embed import encode_texts

        with torch.inference_mode():
            vecs = encode_texts(
                texts,
                self.tokenizer,
                self.model,
                pooling=self.pooling,
                max_length=self.max_length,
                batch_size=self.batch_size,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)


@dataclass
class FaissRetriever:
    """Dense retrieval: encode queries, search a FAISS inner-product index.

    With ``rerank > 0`` (for compressed indexes) ``k * rerank`` candidates are re-scored with the
    exact document vectors.
    """

    name: str
    index: Any
    doc_ids: list[str]
    encoder: QueryEncoder
    embeddings: np.ndarray | None = None
    rerank: int = 0

    def search(self, queries: list[str], k: int) -> list[Hits]:
        if not queries:
            return []
        vecs = self.encoder.encode(queries)
        return self.search_vectors(vecs, k)

    def search_vectors(self, vecs: np.ndarray, k: int) -> list[Hits]:
        k = min(k, self.index.ntotal)
        if not self.rerank:
            scores, labels = self.index.search(vecs, k)
            return hits_from_arrays(self.doc_ids, labels, scores)
        _, cand = self.index.search(vecs, min(k * self.rerank, self.index.ntotal))
        labels = np.full((len(vecs), k), -1, dtype=np.int64)
        scores = np.full((len(vecs), k), -np.inf, dtype=np.float32)
        for row, (c, v) in enumerate(zip(cand, vecs, strict=True)):
            c = c[c >= 0]
            exact = self.embeddings[c] @ v
            order = np.argsort(-exact, kind="stable")[:k]
            labels[row, : len(order)] = c[order]
            scores[row, : len(order)] = exact[order]
        return hits_from_arrays(self.doc_ids, labels, scores)


@dataclass
class BM25Retriever:
    """BM25 (bm25s), with the stemmer and stopwords the index was built with.

    Documents sharing no term with the query (score 0) are not returned.
    """

    name: str
    model: Any
    doc_ids: list[str]
    stopwords: str = "en"
    stemmer_language: str | None = "english"
    stemmer: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.stemmer_language:
            import Stemmer

            self.stemmer = Stemmer.Stemmer(self.stemmer_language)

    def search(self, queries: list[str], k: int) -> list[Hits]:
        import bm25s

        if not queries:
            return []
        tokens = bm25s.tokenize(
            queries, stopwords=self.stopwords, stemmer=self.stemmer, return_ids=False, show_progress=False
        )
        labels, scores = self.model.retrieve(tokens, k=min(k, len(self.doc_ids)), show_progress=False)
        labels = np.where(scores > 0, labels, -1)
        return hits_from_arrays(self.doc_ids, labels, scores)


# --- building -------------------------------------------------------------------------------


def build_faiss(embeddings: np.ndarray, pq_m: int) -> tuple[Any, Any]:
    """An exact ``IndexFlatIP`` and a trained ``PQ{pq_m}x4fs`` inner-product index."""
    import faiss

    dim = embeddings.shape[1]
    flat = faiss.IndexFlatIP(dim)
    flat.add(embeddings)
    pq = None
    if len(embeddings) >= PQ_MIN_DOCS:
        pq = faiss.index_factory(dim, f"PQ{pq_m}x4fs", faiss.METRIC_INNER_PRODUCT)
        if len(embeddings) < 39 * 16:
            log.warning(
                "PQ trained on only %d vectors (FAISS suggests >= 624); its codebooks are rough",
                len(embeddings),
            )
        # Silence FAISS's own per-sub-quantizer warning: one line above says it once.
        pq.pq.cp.min_points_per_centroid = 1
        pq.train(embeddings)
        pq.add(embeddings)
    return flat, pq


def build_bm25(
    texts: list[str],
    out: Path,
    *,
    k1: float = 1.5,
    b: float = 0.75,
    method: str = "lucene",
    stemmer: str | None = "english",
    stopwords: str = "en",
) -> int:
    """Index ``texts`` with bm25s and save it to ``out``; returns the vocabulary size."""
    import bm25s
    import Stemmer

    tokens = bm25s.tokenize(
        texts, stopwords=stopwords, stemmer=Stemmer.Stemmer(stemmer) if stemmer else None, show_progress=False
    )
    model = bm25s.BM25(k1=k1, b=b, method=method)
    model.index(tokens, show_progress=False)
    model.save(str(out), show_progress=False)
    return len(tokens.vocab)
