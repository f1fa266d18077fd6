"""The one search path: every method of an index, over one live corpus.

A :class:`Searcher` loads each method's retriever from the registry on first use and keeps it;
``search(method, queries, k, **options)`` checks the options against the method's declaration
and runs the retriever. ``add`` and ``remove`` change the corpus and every loaded retriever that
follows live changes; a retriever loaded later first catches up with the changes made so far.
``nci search``, ``nci evaluate``, ``nci bench`` and the service (through :mod:`nci.live`) all
search through this class.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nci.manifest import ArtifactError
from nci.retrieval.corpus import Corpus
from nci.retrieval.hits import Hits
from nci.retrieval.index import Index
from nci.retrieval.registry import LiveDocument, LiveRetriever, LoadContext, Retriever, get_method
from nci.retrieval.rwlock import ReadWriteLock

log = logging.getLogger(__name__)


def set_threads(n: int) -> None:
    """Use ``n`` CPU threads in torch and FAISS (call from entry points only)."""
    import faiss
    import torch

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


def search_batched(
    retriever: Retriever, queries: Sequence[str], k: int, batch_size: int = 64, progress: bool = False
) -> list[Hits]:
    """``retriever.search`` over ``queries`` in batches of ``batch_size``."""
    from tqdm import tqdm

    results: list[Hits] = []
    starts = range(0, len(queries), batch_size)
    for start in tqdm(starts, desc="search", unit="batch", disable=not progress, leave=False):
        results.extend(retriever.search(list(queries[start : start + batch_size]), k))
    return results


@dataclass
class BoundRetriever:
    """One method with fixed options: ``search(queries, k)``."""

    name: str
    searcher: Searcher
    method: str
    options: dict[str, Any] = field(default_factory=dict)

    def search(self, queries: list[str], k: int) -> list[Hits]:
        return self.searcher.search(self.method, queries, k, **self.options)


class Searcher:
    def __init__(self, index: Index, corpus: Corpus | None = None):
        self.index = index
        self.corpus = corpus or Corpus(index)
        self.available = index.methods()
        self.lock = ReadWriteLock()  # searches share it; additions and deletions take it alone
        self._load_lock = threading.RLock()  # a composed method loads its parts inside
        self._retrievers: dict[str, Retriever] = {}

    def methods(self) -> dict[str, str | None]:
        """Each registered method -> None when available, else why not."""
        return dict(self.available)

    def load(self, method: str) -> Retriever:
        """The retriever of ``method`` (loaded on first use, then kept)."""
        retriever = self._retrievers.get(method)
        if retriever is not None:
            return retriever
        with self._load_lock, self.lock.read():
            retriever = self._retrievers.get(method)
            if retriever is None:
                spec = get_method(method)
                if method not in self.available:  # registered after this searcher was made
                    self.available = self.index.methods()
                self.index.check_method(method)
                retriever = spec.load(LoadContext(self.index, self.corpus, self.load))
                if not spec.needs and isinstance(retriever, LiveRetriever):
                    self._catch_up(retriever)
                self._retrievers[method] = retriever
            return retriever

    def _catch_up(self, retriever: LiveRetriever) -> None:
        corpus = self.corpus
        if corpus.deleted_built:
            retriever.remove(sorted(corpus.deleted_built))
        if corpus.added:
            retriever.add([self.live_document(d) for d in corpus.added])

    def live_document(self, doc_id: str) -> LiveDocument:
        doc = self.corpus.store[doc_id]
        return LiveDocument(
            doc_id,
            doc.get("title", ""),
            doc.get("text", ""),
            self.corpus.vector(doc_id),
            self.corpus.semantic_id(doc_id),
        )

    def retriever(self, method: str, **options: Any) -> BoundRetriever:
        """``method`` with fixed options, named as the registry labels it (e.g. ``nci-beam10``)."""
        spec = get_method(method)
        opts = spec.parse_options(options)
        self.load(method)
        return BoundRetriever(spec.display_name(opts), self, method, opts)

    def search(self, method: str, queries: Sequence[str], k: int, **options: Any) -> list[Hits]:
        """Up to ``k`` hits per query, best first, over the live documents."""
        spec = get_method(method)
        opts = spec.parse_options(options)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not queries:
            return []
        retriever = self.load(method)
        with self.lock.read():
            return retriever.search(list(queries), k, **opts)

    def add(self, documents: Sequence[LiveDocument]) -> None:
        """Add documents to the corpus and every loaded method (not durable: see nci.live)."""
        with self.lock.write():
            self.corpus.add(documents)
            for retriever in self._live_retrievers():
                retriever.add(documents)
        self._refresh_in_background()

    def remove(self, doc_ids: Sequence[str]) -> None:
        """Remove live documents from the corpus and every loaded method."""
        with self.lock.write():
            for doc_id in doc_ids:
                self.corpus.remove(doc_id)
            for retriever in self._live_retrievers():
                retriever.remove(doc_ids)
        self._refresh_in_background()

    def _refresh_in_background(self) -> None:
        """Rebuild what a change made stale (BM25) off the request path; a search that comes
        first rebuilds it itself, and only searches of that method wait."""
        for retriever in self._live_retrievers():
            refresh = getattr(retriever, "refresh", None)
            if refresh is not None:
                threading.Thread(target=self._refresh, args=(refresh,), daemon=True).start()

    def _refresh(self, refresh: Any) -> None:
        try:
            with self.lock.read():
                refresh()
        except Exception:  # the next search of the method rebuilds and reports it
            log.exception("background refresh failed")

    def _live_retrievers(self) -> list[LiveRetriever]:
        return [
            r for m, r in self._retrievers.items() if not get_method(m).needs and isinstance(r, LiveRetriever)
        ]

    def warm_up(self) -> dict[str, float]:
        """Load every available method and run one query through it (fails early)."""
        seconds = {}
        for method, reason in self.methods().items():
            if reason:
                continue
            start = time.perf_counter()
            try:
                self.search(method, ["warm up query"], k=1)
            except Exception as e:
                raise ArtifactError(
                    f"{self.index.path}: method '{method}' failed its warm-up query "
                    f"({type(e).__name__}: {e}); the index is corrupt or incomplete: rebuild it with "
                    "`nci index build`"
                ) from e
            seconds[method] = time.perf_counter() - start
        return seconds
