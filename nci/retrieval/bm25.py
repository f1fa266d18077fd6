"""``bm25``: BM25 (bm25s) with an English stemmer (PyStemmer) and English stopwords.

bm25s has no incremental add: after any addition or deletion the index is rebuilt over the live
corpus before the next search (0.3-0.7 s for SQuAD's 2,067 paragraphs on two busy cores), so its
scores are always those of a BM25 index over exactly the live documents, whatever order the
changes came in (a server and a replay of its journal rank alike).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nci.manifest import ArtifactError
from nci.retrieval.hits import Hits, hits_from_arrays
from nci.retrieval.registry import BuildContext, LiveDocument, LoadContext, Method, register

log = logging.getLogger(__name__)

BM25 = "bm25"


@dataclass
class BM25Retriever:
    """BM25 (bm25s), with the stemmer and stopwords the index was built with.

    Documents sharing no term with the query (score 0) are not returned. ``live_texts`` gives
    ``(doc ids, texts)`` of the live corpus for the rebuild after additions.
    """

    name: str
    model: Any
    doc_ids: list[str]
    stopwords: str = "en"
    stemmer_language: str | None = "english"
    params: dict[str, Any] = field(default_factory=dict)  # k1, b, variant
    live_texts: Callable[[], tuple[list[str], list[str]]] | None = None
    stemmer: Any = field(init=False, default=None)
    dirty: bool = field(init=False, default=False)  # the live corpus changed since the model was built
    _mutex: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.stemmer_language:
            import Stemmer

            self.stemmer = Stemmer.Stemmer(self.stemmer_language)

    def search(self, queries: list[str], k: int) -> list[Hits]:
        if not queries:
            return []
        doc_ids, labels, scores = self._ranked(queries, k)
        labels = np.where(scores > 0, labels, -1)
        return hits_from_arrays(doc_ids, labels, scores, self.name)

    def top(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each query's ``k`` best documents as positions in ``doc_ids`` and their scores
        (``[len(queries), k]`` each; a score of 0 shares no term with the query)."""
        _, labels, scores = self._ranked(queries, k)
        return labels, scores

    def _ranked(self, queries: list[str], k: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The document ids the model ranks, and each query's top ``k`` positions and scores."""
        import bm25s

        with self._mutex:  # a rebuild swaps model and ids together
            if self.dirty:
                self.rebuild()
            model, doc_ids = self.model, self.doc_ids
        tokens = bm25s.tokenize(
            queries, stopwords=self.stopwords, stemmer=self.stemmer, return_ids=False, show_progress=False
        )
        labels, scores = model.retrieve(tokens, k=min(k, len(doc_ids)), show_progress=False)
        return doc_ids, np.asarray(labels), np.asarray(scores)

    def refresh(self) -> None:
        """Rebuild now if the corpus changed (called off the request path after an update)."""
        with self._mutex:
            if self.dirty:
                self.rebuild()

    def add(self, documents: Sequence[LiveDocument]) -> None:
        if documents:
            self.dirty = True

    def remove(self, doc_ids: Sequence[str]) -> None:
        if doc_ids:
            self.dirty = True

    def rebuild(self) -> None:
        """Index the live corpus anew (after additions or deletions; hold ``_mutex``)."""
        import bm25s

        assert self.live_texts is not None, "a BM25 retriever without a live corpus cannot rebuild"
        start = time.perf_counter()
        doc_ids, texts = self.live_texts()
        tokens = bm25s.tokenize(texts, stopwords=self.stopwords, stemmer=self.stemmer, show_progress=False)
        model = bm25s.BM25(
            k1=self.params.get("k1", 1.5),
            b=self.params.get("b", 0.75),
            method=self.params.get("variant", "lucene"),
        )
        model.index(tokens, show_progress=False)
        self.model, self.doc_ids = model, doc_ids
        self.dirty = False
        took = time.perf_counter() - start
        log.info("%s indexed %d documents in %.2f s", self.name, len(doc_ids), took)


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
    retriever = fit_bm25(texts, k1=k1, b=b, method=method, stemmer=stemmer, stopwords=stopwords)
    retriever.model.save(str(out), show_progress=False)
    return len(retriever.model.vocab_dict)


def fit_bm25(
    texts: list[str],
    *,
    k1: float = 1.5,
    b: float = 0.75,
    method: str = "lucene",
    stemmer: str | None = "english",
    stopwords: str = "en",
    name: str = BM25,
) -> BM25Retriever:
    """An in-memory BM25 retriever over ``texts`` (documents numbered by position)."""
    doc_ids = [str(i) for i in range(len(texts))]
    retriever = BM25Retriever(
        name,
        None,
        doc_ids,
        stopwords=stopwords,
        stemmer_language=stemmer,
        params={"k1": k1, "b": b, "variant": method},
        live_texts=lambda: (doc_ids, texts),
    )
    retriever.rebuild()
    return retriever


def index_bm25(texts: list[str], out: Path, cfg: Any) -> dict[str, Any]:
    """Index ``texts`` into ``out`` with the BM25 settings of an ``IndexConfig``; returns the
    settings and vocabulary size for the method's manifest entry."""
    vocab = build_bm25(
        texts,
        out,
        k1=cfg.bm25_k1,
        b=cfg.bm25_b,
        method=cfg.bm25_method,
        stemmer=cfg.stemmer,
        stopwords=cfg.stopwords,
    )
    return {
        "stemmer": cfg.stemmer,
        "stopwords": cfg.stopwords,
        "k1": cfg.bm25_k1,
        "b": cfg.bm25_b,
        "variant": cfg.bm25_method,
        "vocabulary": vocab,
    }


def open_bm25(
    name: str,
    path: Path,
    info: dict[str, Any],
    doc_ids: list[str],
    live_texts: Callable[[], tuple[list[str], list[str]]],
) -> BM25Retriever:
    """The retriever over the bm25s index at ``path``, with the settings its manifest entry
    ``info`` records (:func:`index_bm25`)."""
    import bm25s

    try:
        model = bm25s.BM25.load(str(path), mmap=True, show_progress=False)
    except (OSError, ValueError, KeyError) as e:
        raise ArtifactError(f"{path}: cannot load the BM25 index ({e}); rebuild the index") from e
    return BM25Retriever(
        name,
        model,
        doc_ids,
        stopwords=info["stopwords"],
        stemmer_language=info["stemmer"],
        params={key: info[key] for key in ("k1", "b", "variant") if key in info},
        live_texts=live_texts,
    )


def _build(ctx: BuildContext) -> dict[str, Any]:
    log.info("BM25 over %d documents", len(ctx.doc_ids))
    return {"files": [BM25], **index_bm25(ctx.texts(), ctx.out / BM25, ctx.config)}


def _load(ctx: LoadContext) -> BM25Retriever:
    index, corpus = ctx.index, ctx.corpus

    def live_texts() -> tuple[list[str], list[str]]:
        doc_ids = list(corpus.store)
        return doc_ids, [corpus.text(d) for d in doc_ids]

    info = index.manifest["methods"]["bm25"]
    return open_bm25("bm25", index.path / BM25, info, index.doc_ids, live_texts)


register(
    Method(
        name="bm25",
        summary="BM25 (bm25s, Lucene variant) with an English stemmer and stopwords",
        load=_load,
        build=_build,
        score="BM25 score",
    )
)
